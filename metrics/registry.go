package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a private registry (nothing of the process-wide
// default one leaks in) holding the collector over source and owners
// (nil: none) and xmacvlan_build_info.
func NewRegistry(source Source, owners Owners, logf func(format string, args ...any)) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCollector(source, owners, logf)); err != nil {
		return nil, err
	}
	if err := reg.Register(buildInfo()); err != nil {
		return nil, err
	}
	return reg, nil
}

// Handler serves reg in the Prometheus exposition formats. A registry that
// fails to gather answers 500 rather than a partial page.
func Handler(reg *prometheus.Registry, logf func(format string, args ...any)) http.Handler {
	opts := promhttp.HandlerOpts{
		ErrorHandling: promhttp.HTTPErrorOnError,
		// Scrapes wait on the loader's lock in turn; a pile of them
		// would only delay the CLI.
		MaxRequestsInFlight: 4,
	}
	if logf != nil {
		opts.ErrorLog = printfLogger(logf)
	}
	return promhttp.HandlerFor(reg, opts)
}

type printfLogger func(format string, args ...any)

func (l printfLogger) Println(v ...any) { l("%v", v) }

// buildInfo is the constant 1 labelled with what this binary is. It is
// not read from the tables, so it is there even when a scrape fails: a
// dashboard can tell "exporter up, tables unreadable" from "exporter down".
func buildInfo() prometheus.Collector {
	version, revision := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "The xmacvlan build serving these metrics; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
