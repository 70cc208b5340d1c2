package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// tcpTransfer sends size random bytes over TCP from client to a server
// listening on addr in server's namespace, and fails unless the server
// receives them intact (SHA-256 over the whole stream).
func tcpTransfer(t *testing.T, server *testutil.Netns, client *testutil.Netns, addr string, size int) {
	t.Helper()
	if err := tryTCPTransfer(server, client, addr, size); err != nil {
		t.Fatal(err)
	}
}

func tryTCPTransfer(server *testutil.Netns, client *testutil.Netns, addr string, size int) error {
	var ln net.Listener
	err := server.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()

	data := make([]byte, size)
	rand.Read(data)
	var conn net.Conn
	err = client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(data); err != nil {
		conn.Close()
		return fmt.Errorf("send: %w", err)
	}
	conn.Close()
	r := <-got
	if r.err != nil {
		return fmt.Errorf("receive: %w", r.err)
	}
	if r.n != int64(size) || r.sum != sha256.Sum256(data) {
		return fmt.Errorf("received %d bytes with a different SHA-256 (sent %d)", r.n, size)
	}
	return nil
}

// capture counts the frames that arrive on an interface whose payload
// carries a marker, from an AF_PACKET socket opened inside ns.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func startCapture(t *testing.T, ns *testutil.Netns, dev string) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		// The kernel reports a tag kept in skb metadata as auxiliary
		// data: put it back into the frame, as tcpdump does.
		if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	go func() {
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
	}()
	t.Cleanup(c.stop)
	return c
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

func (c *capture) stop() {
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	unix.Close(c.fd)
	<-c.done
}

// matching returns the frames containing marker.
func (c *capture) matching(marker []byte) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		if bytes.Contains(f, marker) {
			out = append(out, f)
		}
	}
	return out
}

// unicast returns the frames from src to dst.
func (c *capture) unicast(src, dst net.HardwareAddr) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		if bytes.Equal(f[0:6], dst) && bytes.Equal(f[6:12], src) {
			out = append(out, f)
		}
	}
	return out
}

// from returns the frames sent by src, to anyone.
func (c *capture) from(src net.HardwareAddr) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		if bytes.Equal(f[6:12], src) {
			out = append(out, f)
		}
	}
	return out
}

// sender writes raw frames out of an interface, from inside ns.
type sender struct{ fd, ifindex int }

func newSender(t *testing.T, ns *testutil.Netns, dev string) *sender {
	t.Helper()
	s := &sender{}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		s.ifindex = ifi.Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("sender on %s: %v", dev, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *sender) send(t *testing.T, frame []byte) {
	t.Helper()
	to := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}
	copy(to.Addr[:], frame[:6])
	if err := unix.Sendto(s.fd, frame, 0, to); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// frame builds an Ethernet frame: dst, src, optional 802.1Q/802.1ad tags
// as {tpid, vid} pairs, ethertype 0x88b5 (local experimental) and a
// payload that starts with marker.
func frame(dst, src net.HardwareAddr, tags [][2]uint16, marker []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	for _, tg := range tags {
		b = binary.BigEndian.AppendUint16(b, tg[0])
		b = binary.BigEndian.AppendUint16(b, tg[1])
	}
	b = binary.BigEndian.AppendUint16(b, 0x88b5)
	b = append(b, marker...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// eventually retries f for up to d, for state the kernel settles
// asynchronously (neighbour entries, NAPI, counters of in-flight frames).
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
