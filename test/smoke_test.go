package test

import (
	"fmt"
	"testing"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/maps"
)

func TestSmokePing(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, maps.Bridge)
	c := h.container("lan", "02:00:00:00:00:02", "10.0.0.2/24", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatal(err)
	}
	if err := ping(c.ns, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
}

func TestSmokeVLAN(t *testing.T) {
	for _, mode := range []loader.XDPMode{loader.ModeNative, loader.ModeGeneric} {
		for _, xdp := range []bool{false, true} {
			for _, txvlan := range []bool{true, false} {
				t.Run(fmt.Sprint(mode, " xdp=", xdp, " txvlan=", txvlan), func(t *testing.T) {
					l := newLab(t)
					a, b := l.host(), l.host()
					if !txvlan {
						run(l.sw, "ethtool", "-K", a.port, "txvlan", "off")
						run(l.sw, "ethtool", "-K", b.port, "txvlan", "off")
					}
					ra := a.attach(mode)
					rb := b.attach(mode)
					t.Log(ra.XDPMode, ra.Program, rb.Program)
					a.network("v10", 10, maps.Bridge)
					b.network("v10", 10, maps.Bridge)
					ca := a.container("v10", "02:00:00:00:10:0a", "10.10.0.1/24", xdp)
					cb := b.container("v10", "02:00:00:00:10:0b", "10.10.0.2/24", xdp)
					if err := ping(ca.ns, cb.ip); err != nil {
						t.Error(err)
					}
					for _, h := range []*host{a, b} {
						h.tables(func(tb *maps.Tables) error {
							d, _ := tb.Drops()
							e, _ := tb.Events()
							t.Log(d, e)
							return nil
						})
					}
				})
			}
		}
	}
}
