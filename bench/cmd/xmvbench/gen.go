package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	benchbpf "github.com/xmacvlan/xmacvlan/bench/bpf"
)

// progRunAttr is the BPF_PROG_RUN part of union bpf_attr.
type progRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// progRun runs prog with BPF_PROG_RUN once (repeat times over) and returns
// its verdict and the kernel's mean time per run. ctx is the program's
// context (struct xdp_md or a prefix of struct __sk_buff) or nil. Unlike
// ebpf.Program.Run it reports the duration with a context, and it does not
// run the whole batch again when a signal interrupts it.
func progRun(prog *ebpf.Program, data, ctx []byte, repeat, flags, batch uint32) (verdict uint32, perRun time.Duration, err error) {
	attr := progRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(data)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&data[0]))),
		repeat:     repeat,
		flags:      flags,
		batchSize:  batch,
	}
	if len(ctx) > 0 {
		attr.ctxSizeIn = uint32(len(ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(data)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		return 0, 0, errno
	}
	return attr.retval, time.Duration(attr.duration), nil
}

// xdpMD is struct xdp_md, the XDP program's context.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func (m xdpMD) bytes() []byte {
	b, _ := binary.Append(nil, binary.NativeEndian, m)
	return b
}

// frameSize is a minimum Ethernet frame without its FCS: 64 B on a wire.
const frameSize = 60

const benchPort = 9 // the counters count UDP to this port (bench.c)

// udpFrame builds a frameSize IPv4/UDP frame to benchPort, tagged with
// vlan unless it is 0.
func udpFrame(dst, src net.HardwareAddr, vlan int, srcIP, dstIP net.IP) []byte {
	b := append(append([]byte{}, dst...), src...)
	if vlan != 0 {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_8021Q)
		b = binary.BigEndian.AppendUint16(b, uint16(vlan))
	}
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
	ipLen := frameSize - len(b)
	ip := []byte{0x45, 0, byte(ipLen >> 8), byte(ipLen), 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	ip = append(append(ip, srcIP.To4()...), dstIP.To4()...)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := binary.BigEndian.AppendUint16(nil, 0x7862) // source port "xb"
	udp = binary.BigEndian.AppendUint16(udp, benchPort)
	udp = binary.BigEndian.AppendUint16(udp, uint16(ipLen-len(ip)))
	udp = append(udp, 0, 0) // no checksum (IPv4 allows it)
	b = append(append(b, ip...), udp...)
	return append(b, make([]byte, frameSize-len(b))...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// generator sends frames out of the wire's veth with the live-frames mode
// of BPF_PROG_RUN (the technique of xdp-tools' xdp-trafficgen): the kernel
// runs xb_gen on each frame and transmits it on XDP_TX, into the parent's
// receive ring. After each batch of 64 frames the parent's NAPI poll runs
// on the same CPU (softirq on local_bh_enable), and everything the receive
// path does after it: one core carries generator and receiver in turn,
// which is what a rate measured here is the inverse of.
type generator struct {
	objs *benchbpf.BenchObjects
	lab  *lab
	cpu  int
}

// stream is a running generator.
type stream struct {
	cancel context.CancelFunc
	tid    chan int // the generator's OS thread
	done   chan error
}

// Each BPF_PROG_RUN in live-frames mode sets up and tears down a page
// pool, which costs some 20 ms here: many short calls would leave the wire
// idle for a fraction of the time that depends on the path's speed. So the
// generator makes one call as long as the stream, and stop() ends it with
// a signal (the kernel checks for one between batches and returns EINTR).
const forever = 1 << 31

// start sends frame until the stream is stopped, at pps frames per second
// (0: as fast as it can).
func (g *generator) start(frame []byte, pps float64) *stream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{cancel: cancel, tid: make(chan int, 1), done: make(chan error, 1)}
	pace := benchbpf.BenchPace{}
	if pps > 0 {
		pace.IntervalNs = uint64(1e9 / pps)
	}
	if len(frame) != frameSize {
		s.done <- fmt.Errorf("generator: frame of %d bytes, want %d", len(frame), frameSize)
		return s
	}
	if err := g.objs.XbFrame.Update(uint32(0), frame, ebpf.UpdateAny); err != nil {
		s.done <- fmt.Errorf("generator: %w", err)
		return s
	}
	if err := g.objs.XbPace.Update(uint32(0), pace, ebpf.UpdateAny); err != nil {
		s.done <- fmt.Errorf("generator: %w", err)
		return s
	}
	md := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(g.lab.wireIndex)}.bytes()
	go func() {
		s.done <- g.lab.wire.do(func() error {
			s.tid <- unix.Gettid()
			restore, err := pinThread(g.cpu)
			if err != nil {
				return err
			}
			defer restore()
			for ctx.Err() == nil {
				_, _, err := progRun(g.objs.XbGen, frame, md, forever, unix.BPF_F_TEST_XDP_LIVE_FRAMES, 64)
				if err != nil && !errors.Is(err, unix.EINTR) {
					return fmt.Errorf("live-frames generator: %w", err)
				}
			}
			return nil
		})
	}()
	return s
}

// stop ends the stream and reports whether the generator failed. SIGURG
// interrupts the call; Go's runtime takes it in its stride (it uses it
// for preemption).
func (s *stream) stop() error {
	s.cancel()
	tid := 0
	for {
		if tid != 0 {
			unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
		}
		select {
		case err := <-s.done:
			return err
		case tid = <-s.tid:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sent reads how many frames the generator has handed to the wire so far.
func (g *generator) sent() (uint64, error) {
	var perCPU []benchbpf.BenchCount
	if err := g.objs.XbSent.Lookup(uint32(0), &perCPU); err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range perCPU {
		n += c.Packets
	}
	return n, nil
}

// pinThread binds the calling (locked) thread to cpu, and returns how to
// undo it before the thread goes back to the runtime.
func pinThread(cpu int) (func(), error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { unix.SchedSetaffinity(0, &old) }, nil
}
