package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/docker"
	"github.com/xmacvlan/xmacvlan/metrics"
)

// DefaultMetricsListen is loopback only: the counters name every
// container; exposing them is the operator's decision.
const DefaultMetricsListen = "127.0.0.1:9435"

func newMetricsCmd(g *globals) *cobra.Command {
	var listen, dockerState string
	cmd := &cobra.Command{
		Use:   "metrics [--listen ADDR]",
		Short: "Serve the datapath's counters to Prometheus on http://ADDR/metrics",
		Long: "Serves every attached parent's counters under --bpffs in the Prometheus format. Each scrape\n" +
			"reads the pinned tables afresh, so the exporter keeps working while endpoints come and go\n" +
			"and parents are detached and attached again. xmacvlan_endpoint_info names each endpoint's\n" +
			"Docker endpoint and container (docker-plugin's state in --docker-state). A scrape that\n" +
			"cannot read the tables reports only xmacvlan_scrape_errors_total (and xmacvlan_build_info),\n" +
			"never a partial set.\n" +
			"It reads no interface, so it may run in any network namespace.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "serving metrics of %s on http://%s/metrics\n", g.root, ln.Addr())
			return serveMetrics(ctx, ln, g.root, dockerMetricsOwners(dockerState), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&listen, "listen", DefaultMetricsListen, "address to serve /metrics on")
	cmd.Flags().StringVar(&dockerState, "docker-state", docker.DefaultStateDir, "docker-plugin's --state: label xmacvlan_endpoint_info with Docker endpoints and containers")
	return cmd
}

// dockerMetricsOwners labels the exporter's endpoints from docker-plugin's
// state in dir, read at every scrape as `endpoint list` reads it.
func dockerMetricsOwners(dir string) metrics.Owners {
	return func() (map[string]metrics.Owner, error) {
		owners, err := docker.ReadOwners(dir)
		out := make(map[string]metrics.Owner, len(owners))
		for outer, o := range owners {
			out[outer] = metrics.Owner{DockerEndpoint: o.Endpoint, Container: o.Container}
		}
		return out, err
	}
}

// serveMetrics serves /metrics on ln until ctx ends, then shuts down
// cleanly. Scrape errors are logged to errw.
func serveMetrics(ctx context.Context, ln net.Listener, root string, owners metrics.Owners, errw io.Writer) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(errw, "%s metrics: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	reg, err := metrics.NewRegistry(metrics.PinnedSource(root), owners, logf)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg, logf))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "xmacvlan exporter: the metrics are at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
