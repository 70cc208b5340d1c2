package test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// attach --xdp on a veth parent: auto runs no XDP program (a veth copies
// every frame for one) and says why in status; the first endpoint with XDP
// delivery turns XDP on, its frames then arrive by XDP redirect, and the
// last one's removal turns it off again. --xdp off refuses XDP delivery,
// --xdp on gives native XDP, a re-attach keeps the recorded choice, and
// the deprecated --mode still works, with a notice.
func TestXDPChoiceOnVeth(t *testing.T) {
	l := newLab(t)
	h := l.host()
	res := h.attach("")
	if res.XDP != "off" || res.XDPChoice != loader.XDPAuto || res.Driver != "veth" || !strings.Contains(res.XDPReason, "veth_xdp_rcv_skb") {
		t.Fatalf("auto on a veth: XDP %s, choice %s, driver %s, reason %q; want off for the veth", res.XDP, res.XDPChoice, res.Driver, res.XDPReason)
	}
	xdpOn := func() bool {
		x := mustLink(t, h.ns, h.parent).Attrs().Xdp
		return x != nil && x.Attached && x.AttachMode == 1 // XDP_ATTACHED_DRV
	}
	status := func() loader.ParentStatus {
		t.Helper()
		out, err := h.cli("status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var sts []loader.ParentStatus
		if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		return sts[0]
	}
	if xdpOn() {
		t.Fatal("auto on a veth attached an XDP program to the parent")
	}
	if st := status(); st.XDP != "off" || st.XDPChoice != loader.XDPAuto || st.XDPReason != res.XDPReason {
		t.Errorf("status: XDP %s, choice %s, reason %q; want what attach said", st.XDP, st.XDPChoice, st.XDPReason)
	}
	if text, _ := h.cli("status"); !strings.Contains(text, "XDP off") || !strings.Contains(text, "XDP auto: on a veth") {
		t.Errorf("status text does not say XDP off and why:\n%s", text)
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatalf("tcx alone: %v", err)
	}

	// An endpoint with XDP delivery: auto turns XDP on.
	x := h.container("lan", "", "10.0.0.3/24", true)
	if !xdpOn() {
		t.Fatal("auto: an XDP-delivery endpoint did not turn native XDP on")
	}
	if st := status(); st.XDP != "on" || !strings.Contains(st.XDPReason, "1 endpoint(s) receive by XDP redirect") {
		t.Errorf("status with an XDP-delivery endpoint: XDP %s, reason %q", st.XDP, st.XDPReason)
	}
	before := h.events()[tables.EvXDPRedirect].Packets
	if err := ping(l.sw, x.ip); err != nil {
		t.Fatalf("XDP delivery: %v", err)
	}
	if got := h.events()[tables.EvXDPRedirect].Packets - before; got < 2 {
		t.Errorf("%d frames arrived by XDP redirect, want the pings (2)", got)
	}
	if _, err := h.tryAttach(loader.AttachOptions{XDP: loader.XDPOff}); err == nil || !strings.Contains(err.Error(), "receive by XDP redirect") {
		t.Errorf("--xdp off with an XDP-delivery endpoint: %v, want a refusal", err)
	}
	err := h.ns.Do(func() error {
		_, err := h.lc().DeleteEndpoint("lan", lifecycle.Selector{Netns: x.ns.Path(), Name: "eth0"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if xdpOn() {
		t.Error("auto: XDP stayed on after the last XDP-delivery endpoint went")
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("after XDP went: %v", err)
	}

	// --xdp off: XDP delivery is refused, and nothing is built.
	if res, err := h.tryAttach(loader.AttachOptions{XDP: loader.XDPOff}); err != nil || res.XDP != "off" {
		t.Fatalf("--xdp off: %v, XDP %v", err, res)
	}
	err = h.ns.Do(func() error {
		_, err := h.lc().AddEndpoint("lan", lifecycle.Spec{Netns: c.ns.Path(), Name: "eth1", XDP: true})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "--xdp off, and XDP delivery needs the XDP program") {
		t.Errorf("XDP delivery under --xdp off: %v, want a refusal", err)
	}
	h.ns.Do(func() error {
		if eps, err := h.lc().Endpoints("lan"); err != nil || len(eps) != 1 {
			t.Errorf("%d endpoints after the refused add (%v), want 1", len(eps), err)
		}
		return nil
	})

	// The deprecated --mode: native is --xdp on.
	out, err := h.cli("attach", h.parent, "--mode", "native")
	if err != nil || !strings.Contains(out, "--mode is deprecated: use --xdp on") {
		t.Errorf("attach --mode native: %v\n%s", err, out)
	}
	if st := status(); st.XDP != "on" || st.XDPChoice != loader.XDPOn || !xdpOn() {
		t.Errorf("after --mode native: XDP %s, choice %s", st.XDP, st.XDPChoice)
	}
	// A re-attach without --xdp keeps the recorded choice.
	if res, err := h.tryAttach(loader.AttachOptions{}); err != nil || res.XDP != "on" || res.XDPChoice != loader.XDPOn {
		t.Errorf("re-attach: %v %+v, want on as recorded", err, res)
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("native XDP: %v", err)
	}
	// Back to auto: the XDP program goes.
	if res, err := h.tryAttach(loader.AttachOptions{XDP: loader.XDPAuto}); err != nil || res.XDP != "off" || xdpOn() {
		t.Errorf("back to auto: %v %+v, XDP on the parent %v", err, res, xdpOn())
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("back to auto: %v", err)
	}
}
