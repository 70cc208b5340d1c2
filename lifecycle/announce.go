package lifecycle

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
)

// announce sends a gratuitous ARP (IPv4) or an unsolicited neighbour
// advertisement (IPv6) for the endpoint's address from its inner end, so
// that neighbours and switches learn the new MAC at once.
func announce(tg *target, s Spec) error {
	if s.IP == nil {
		return nil
	}
	frame := gratuitousARP(s.MAC, s.IP.IP)
	if s.IP.IP.To4() == nil {
		frame = unsolicitedNA(s.MAC, s.IP.IP)
	}
	return nsutil.Do(tg.ns, func() error {
		ifi, err := net.InterfaceByName(s.Name)
		if err != nil {
			return err
		}
		return sendFrame(ifi.Index, frame)
	})
}

// sendFrame writes one Ethernet frame out of an interface.
func sendFrame(ifindex int, frame []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], frame[:6])
	return unix.Sendto(fd, frame, 0, to)
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// gratuitousARP is an ARP request for the sender's own address.
func gratuitousARP(mac net.HardwareAddr, ip net.IP) []byte {
	b := ethHeader(broadcast, mac, unix.ETH_P_ARP)
	b = binary.BigEndian.AppendUint16(b, 1)      // Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // IPv4
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, 1) // request
	b = append(b, mac...)
	b = append(b, ip.To4()...)
	b = append(b, make([]byte, 6)...)
	b = append(b, ip.To4()...)
	return b
}

// unsolicitedNA advertises ip at mac to all nodes, with the override flag.
func unsolicitedNA(mac net.HardwareAddr, ip net.IP) []byte {
	allNodes := net.ParseIP("ff02::1")
	icmp := []byte{136, 0, 0, 0, 0x20, 0, 0, 0} // NA, checksum later, flags: override
	icmp = append(icmp, ip.To16()...)
	icmp = append(icmp, 2, 1) // option: target link-layer address, 8 bytes
	icmp = append(icmp, mac...)
	binary.BigEndian.PutUint16(icmp[2:], icmpv6Checksum(ip, allNodes, icmp))

	b := ethHeader(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, mac, unix.ETH_P_IPV6)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, unix.IPPROTO_ICMPV6, 255)
	b = append(b, ip.To16()...)
	b = append(b, allNodes...)
	return append(b, icmp...)
}

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

// icmpv6Checksum is the one's complement sum over the IPv6 pseudo-header
// and the message.
func icmpv6Checksum(src, dst net.IP, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.To16())
	add(dst.To16())
	add(binary.BigEndian.AppendUint32(nil, uint32(len(msg))))
	add([]byte{0, 0, 0, unix.IPPROTO_ICMPV6})
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
