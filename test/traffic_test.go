package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/frames"
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

// capture records what arrives on an interface (internal/frames), for
// the life of the test.
type capture struct{ *frames.Capture }

func startCapture(t *testing.T, ns *testutil.Netns, dev string) *capture {
	t.Helper()
	c, err := frames.Listen(ns.Handle, dev)
	if err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	t.Cleanup(c.Close)
	return &capture{c}
}

// matching returns the frames containing marker.
func (c *capture) matching(marker []byte) [][]byte { return c.Containing(marker) }

// unicast returns the frames from src to dst.
func (c *capture) unicast(src, dst net.HardwareAddr) [][]byte {
	return c.Select(func(f []byte) bool { return bytes.Equal(f[0:6], dst) && bytes.Equal(f[6:12], src) })
}

// from returns the frames sent by src, to anyone.
func (c *capture) from(src net.HardwareAddr) [][]byte {
	return c.Select(func(f []byte) bool { return bytes.Equal(f[6:12], src) })
}

// sender writes raw frames out of an interface, from inside ns.
type sender struct{ *frames.Sender }

func newSender(t *testing.T, ns *testutil.Netns, dev string) *sender {
	t.Helper()
	s, err := frames.NewSender(ns.Handle, dev)
	if err != nil {
		t.Fatalf("sender on %s: %v", dev, err)
	}
	t.Cleanup(s.Close)
	return &sender{s}
}

func (s *sender) send(t *testing.T, frame []byte) {
	t.Helper()
	if err := s.Send(frame); err != nil {
		t.Fatalf("send: %v", err)
	}
}

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
