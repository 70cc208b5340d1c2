package test

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/tables"
)

// An endpoint whose inner end the runtime moves (Docker's way), with the
// runtime played by hand: built in the host under a temporary name, moved,
// renamed and configured, then settled: recorded under its final name,
// announced, healthy for `endpoint check` and gc, and removed by its outer
// name.
func TestMovedEndpoint(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := testutil.NewNetns(t, "xc")
	ip := &net.IPNet{IP: net.IPv4(10, 0, 0, 2).To4(), Mask: net.CIDRMask(24, 32)}
	var ep tables.Endpoint
	lc := h.lc()
	err := h.ns.Do(func() (err error) {
		ep, err = lc.AddEndpoint("lan", lifecycle.Spec{Netns: c.Path(), Moved: true, IP: ip})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ep.Ifname, "xmi") {
		t.Fatalf("the inner end before the move is called %s, want a temporary xmi name", ep.Ifname)
	}
	inner := mustLink(t, h.ns, ep.Ifname)
	if !bytes.Equal(inner.Attrs().HardwareAddr, ep.MAC) {
		t.Errorf("inner end's MAC %s, want %s", inner.Attrs().HardwareAddr, ep.MAC)
	}
	err = h.ns.Do(func() error {
		_, ready, err := lc.SettleMoved("lan", ep.Outer)
		if ready {
			t.Error("settled before the runtime moved the inner end")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// The runtime's part.
	if err := h.ns.NL.LinkSetNsFd(inner, int(c.Handle)); err != nil {
		t.Fatal(err)
	}
	if err := c.NL.LinkSetName(mustLink(t, c, ep.Ifname), "eth0"); err != nil {
		t.Fatal(err)
	}
	addr(t, c, "eth0", ip.String())
	up(t, c, "eth0")

	wire := startCapture(t, l.sw, "br0")
	err = h.ns.Do(func() (err error) {
		ep, err = lc.WaitMoved("lan", ep.Outer, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Ifname != "eth0" {
		t.Errorf("recorded inner name %s after the move, want eth0", ep.Ifname)
	}
	err = eventually(2*time.Second, func() error {
		for _, f := range wire.from(ep.MAC) {
			if len(f) >= 42 && f[12] == 0x08 && f[13] == 0x06 && bytes.Equal(f[28:32], ip.IP) && bytes.Equal(f[38:42], ip.IP) {
				return nil
			}
		}
		return errNoGARP
	})
	if err != nil {
		t.Error(err)
	}
	if err := ping(c, "10.0.0.1"); err != nil {
		t.Errorf("moved endpoint -> wire: %v", err)
	}
	var diffs []lifecycle.Difference
	var removed []lifecycle.Removed
	err = h.ns.Do(func() (err error) {
		if diffs, err = lc.CheckEndpoint("lan", lifecycle.Selector{Netns: c.Path()}); err != nil {
			return err
		}
		removed, err = lc.GC("", true)
		return err
	})
	if err != nil || len(diffs) > 0 || len(removed) > 0 {
		t.Errorf("check: %v, gc --dry-run: %v, %v", diffs, removed, err)
	}

	var found, again bool
	err = h.ns.Do(func() (err error) {
		if found, err = lc.DeleteOuter("lan", ep.Outer); err != nil {
			return err
		}
		again, err = lc.DeleteOuter("lan", ep.Outer)
		return err
	})
	if err != nil || !found || again {
		t.Errorf("DeleteOuter: found %v, again %v, %v", found, again, err)
	}
	if _, err := c.NL.LinkByName("eth0"); err == nil {
		t.Error("the moved inner end outlived its endpoint")
	}
}

var errNoGARP = errors.New("no gratuitous ARP for the moved endpoint on the wire")
