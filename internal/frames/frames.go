// Package frames captures and sends raw Ethernet frames on an interface of
// a network namespace (AF_PACKET), for the tests and the demo.
package frames

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
)

// Capture records every frame an interface receives, VLAN tag included
// even when the kernel keeps it in skb metadata.
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

// Listen starts capturing on dev in ns.
func Listen(ns netns.NsHandle, dev string) (*Capture, error) {
	c := &Capture{done: make(chan struct{})}
	err := nsutil.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		// The kernel reports a tag kept in skb metadata as auxiliary
		// data: it goes back into the frame, as tcpdump does.
		if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			unix.Close(c.fd)
			return err
		}
		if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(c.fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	go c.read()
	return c, nil
}

func (c *Capture) read() {
	defer close(c.done)
	buf, oob := make([]byte, 65536), make([]byte, 1024)
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		// Only what arrives, not what the interface sends.
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := withAuxTag(append([]byte{}, buf[:n]...), oob[:oobn])
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// withAuxTag reinserts the VLAN tag the kernel reported in
// PACKET_AUXDATA (struct tpacket_auxdata) after the MAC addresses.
func withAuxTag(f, oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(f) < 12 {
		return f
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < 20 {
			continue
		}
		status := binary.NativeEndian.Uint32(m.Data[0:])
		tci := binary.NativeEndian.Uint16(m.Data[16:])
		tpid := binary.NativeEndian.Uint16(m.Data[18:])
		if status&unix.TP_STATUS_VLAN_VALID == 0 {
			continue
		}
		if status&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
			tpid = 0x8100
		}
		tag := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, tpid), tci)
		return append(append(append([]byte{}, f[:12]...), tag...), f[12:]...)
	}
	return f
}

// Close stops the capture; the frames stay readable.
func (c *Capture) Close() {
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	unix.Close(c.fd)
	<-c.done
}

// Reset forgets the frames captured so far.
func (c *Capture) Reset() {
	c.mu.Lock()
	c.frames = nil
	c.mu.Unlock()
}

// Select returns the captured frames keep accepts.
func (c *Capture) Select(keep func(f []byte) bool) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// Containing returns the frames that contain marker.
func (c *Capture) Containing(marker []byte) [][]byte {
	return c.Select(func(f []byte) bool { return bytes.Contains(f, marker) })
}

// VLAN returns a frame's 802.1Q VID, or -1 for an untagged frame.
func VLAN(f []byte) int {
	if len(f) >= 16 && f[12] == 0x81 && f[13] == 0x00 {
		return int(binary.BigEndian.Uint16(f[14:16]) & 0x0fff)
	}
	return -1
}

// Sender writes raw frames out of an interface.
type Sender struct{ fd, ifindex int }

// NewSender opens a sender on dev in ns.
func NewSender(ns netns.NsHandle, dev string) (*Sender, error) {
	s := &Sender{}
	err := nsutil.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		s.ifindex = ifi.Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	return s, err
}

// Send writes one frame.
func (s *Sender) Send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}
	copy(to.Addr[:], frame[:6])
	return unix.Sendto(s.fd, frame, 0, to)
}

// Close releases the socket.
func (s *Sender) Close() { unix.Close(s.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }
