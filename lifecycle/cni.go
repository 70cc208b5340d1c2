package lifecycle

import "net"

// Announce sends a gratuitous ARP (IPv4) or an unsolicited neighbour
// advertisement (IPv6, RFC 4861 section 7.2.6) for ip at mac out of
// interface ifname in namespace netns (a name, path or PID), as AddEndpoint
// does for the endpoint's own address. For the addresses a caller adds
// next to it (a CNI IPAM plugin's second address, say).
func Announce(netns, ifname string, mac net.HardwareAddr, ip net.IP) error {
	tg, err := openTarget(Spec{Netns: netns})
	if err != nil {
		return err
	}
	defer tg.close()
	return announce(tg, Spec{Name: ifname, MAC: mac, IP: &net.IPNet{IP: ip}})
}
