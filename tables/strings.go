package tables

import (
	"net"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// Conversions between Go values and the fixed-size C fields.

func putString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

func getString(src []int8) string {
	b := make([]byte, 0, len(src))
	for _, c := range src {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// prefixToRaw stores a prefix as IPv6 (IPv4-mapped for IPv4), with the
// length counted in those 128 bits.
func prefixToRaw(p *net.IPNet) bpf.XmacvlanPrefix {
	var raw bpf.XmacvlanPrefix
	if p == nil {
		return raw
	}
	ones, bits := p.Mask.Size()
	copy(raw.Addr[:], p.IP.To16())
	raw.Len = uint8(ones + 128 - bits)
	return raw
}

func prefixFromRaw(raw bpf.XmacvlanPrefix) *net.IPNet {
	if raw.Len == 0 {
		return nil
	}
	ip := append(net.IP(nil), raw.Addr[:]...)
	if v4 := ip.To4(); v4 != nil && raw.Len >= 96 {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(int(raw.Len)-96, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(int(raw.Len), 128)}
}

func unmap(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}
