// Package ethtool toggles the few offloads xmacvlan cares about, with the
// ethtool ioctl, on an interface of the calling thread's network namespace.
package ethtool

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool commands: each maps to one netdev feature in the kernel.
const (
	ethtoolGDRVINFO = 0x03
	ethtoolGTXCSUM  = 0x16
	ethtoolSTXCSUM  = 0x17
	ethtoolGFLAGS   = 0x25
	ethtoolSFLAGS   = 0x26
	ethtoolGGRO     = 0x2b
	ethtoolSGRO     = 0x2c
	ethtoolGTSO     = 0x1e
	ethtoolSTSO     = 0x1f

	flagRxVLAN = 1 << 8 // ETH_FLAG_RXVLAN: NETIF_F_HW_VLAN_CTAG_RX
)

// ErrFixed means the driver does not let the feature change.
var ErrFixed = errors.New("fixed by the driver")

type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

type value struct {
	cmd  uint32
	data uint32
}

func ioctl(ifname string, cmd, data uint32) (uint32, error) {
	v := value{cmd: cmd, data: data}
	err := ethtoolCall(ifname, unsafe.Pointer(&v))
	return v.data, err
}

// ethtoolCall runs SIOCETHTOOL with arg, a struct that starts with the
// command.
func ethtoolCall(ifname string, arg unsafe.Pointer) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], ifname)
	req.data = uintptr(arg)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req)))
	if errno != 0 {
		if errno == unix.EOPNOTSUPP {
			return fmt.Errorf("%s: %w", ifname, ErrFixed)
		}
		return fmt.Errorf("ethtool on %s: %w", ifname, errno)
	}
	return nil
}

// RxVLANOffload reports whether the NIC strips VLAN tags into metadata.
func RxVLANOffload(ifname string) (bool, error) {
	flags, err := ioctl(ifname, ethtoolGFLAGS, 0)
	return flags&flagRxVLAN != 0, err
}

// SetRxVLANOffload turns tag stripping on or off.
func SetRxVLANOffload(ifname string, on bool) error {
	flags, err := ioctl(ifname, ethtoolGFLAGS, 0)
	if err != nil {
		return err
	}
	if on {
		flags |= flagRxVLAN
	} else {
		flags &^= flagRxVLAN
	}
	_, err = ioctl(ifname, ethtoolSFLAGS, flags)
	return err
}

// GRO reports whether generic receive offload is on.
func GRO(ifname string) (bool, error) {
	v, err := ioctl(ifname, ethtoolGGRO, 0)
	return v != 0, err
}

// SetGRO turns generic receive offload on or off. On a veth, GRO on also
// gives the device the NAPI context that XDP-redirected frames need.
func SetGRO(ifname string, on bool) error {
	_, err := ioctl(ifname, ethtoolSGRO, b2u(on))
	return err
}

// TSO reports whether TCP segmentation offload is on.
func TSO(ifname string) (bool, error) {
	v, err := ioctl(ifname, ethtoolGTSO, 0)
	return v != 0, err
}

// SetTSO turns TCP segmentation offload (every TSO feature,
// NETIF_F_ALL_TSO) on or off.
func SetTSO(ifname string, on bool) error {
	_, err := ioctl(ifname, ethtoolSTSO, b2u(on))
	return err
}

// Driver names the interface's driver (ETHTOOL_GDRVINFO), as `ethtool -i`
// does: "veth", "virtio_net", "mlx5_core", ...
func Driver(ifname string) (string, error) {
	// struct ethtool_drvinfo: cmd, then driver[32], version[32], ...
	var info struct {
		cmd    uint32
		driver [32]byte
		_      [160]byte
	}
	info.cmd = ethtoolGDRVINFO
	if err := ethtoolCall(ifname, unsafe.Pointer(&info)); err != nil {
		return "", err
	}
	n := 0
	for n < len(info.driver) && info.driver[n] != 0 {
		n++
	}
	return string(info.driver[:n]), nil
}

// SetTxChecksum turns transmit checksum offload on or off.
func SetTxChecksum(ifname string, on bool) error {
	_, err := ioctl(ifname, ethtoolSTXCSUM, b2u(on))
	return err
}

// TxChecksum reports whether transmit checksum offload is on.
func TxChecksum(ifname string) (bool, error) {
	v, err := ioctl(ifname, ethtoolGTXCSUM, 0)
	return v != 0, err
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
