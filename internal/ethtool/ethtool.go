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
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
	ethtoolGFLAGS  = 0x25
	ethtoolSFLAGS  = 0x26
	ethtoolGGRO    = 0x2b
	ethtoolSGRO    = 0x2c

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
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := value{cmd: cmd, data: data}
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], ifname)
	req.data = uintptr(unsafe.Pointer(&v))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req)))
	if errno != 0 {
		if errno == unix.EOPNOTSUPP {
			return 0, fmt.Errorf("%s: %w", ifname, ErrFixed)
		}
		return 0, fmt.Errorf("ethtool on %s: %w", ifname, errno)
	}
	return v.data, nil
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
