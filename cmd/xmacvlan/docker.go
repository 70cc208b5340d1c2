package main

import (
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/docker"
)

func newDockerPluginCmd(g *globals) *cobra.Command {
	var socket, stateDir, dockerHost string
	cmd := &cobra.Command{
		Use:   "docker-plugin",
		Short: "Serve Docker's remote network driver protocol (docker network create -d xmacvlan)",
		Long: "Runs in the foreground and answers Docker on --socket; the driver's name in Docker is the\n" +
			"socket's base name (xmacvlan). Options of `docker network create -d xmacvlan`:\n" +
			"  -o parent=NIC (required)  -o vlan=1-4094 (default: untagged)  -o mode=bridge|private|vepa\n" +
			"  -o hairpin=on|off (on the parent)  -o delivery=skb|xdp\n" +
			"Networks and endpoints are made as `xmacvlan network create` and `endpoint add` make them;\n" +
			"the driver keeps Docker's network IDs in --state and repairs the tables from it on start.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logger := log.New(cmd.ErrOrStderr(), "xmacvlan docker-plugin: ", log.LstdFlags)
			d, err := docker.New(docker.Config{Root: g.root, StateDir: stateDir, DockerHost: dockerHost, Log: logger})
			if err != nil {
				return err
			}
			l, err := docker.Listen(socket)
			if err != nil {
				return err
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			go func() {
				<-sig
				l.Close()
			}()
			logger.Printf("serving on %s (state %s, tables %s)", socket, stateDir, g.root)
			err = docker.Serve(l, d)
			d.Close()
			os.Remove(socket)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", docker.DefaultSocket, "unix socket Docker finds the plugin on (its base name is the driver's name)")
	f.StringVar(&stateDir, "state", docker.DefaultStateDir, "directory of the driver's state file (Docker network IDs -> xmacvlan networks)")
	f.StringVar(&dockerHost, "docker-host", "unix:///var/run/docker.sock", "Docker API, to name the containers in `endpoint list`, `stats` and `metrics` (\"\": do not ask)")
	return cmd
}

// dockerOwners maps the outer veth of each Docker endpoint to its
// container, from the driver's state in dir (none without a state file).
func dockerOwners(dir string) map[string]docker.Owner {
	owners, err := docker.ReadOwners(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xmacvlan: docker state:", err)
	}
	return owners
}
