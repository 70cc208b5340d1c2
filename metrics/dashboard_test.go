package metrics

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/xmacvlan/xmacvlan/loader"
)

const dashboard = "../contrib/grafana/xmacvlan-dashboard.json"

// exprs collects every "expr" of the dashboard, panels and variables.
func exprs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			exprs(x, out)
		}
	case []any:
		for _, x := range v {
			exprs(x, out)
		}
	}
}

// The Grafana dashboard only queries metrics the exporter serves, and
// every query is valid PromQL (promtool parses them as recording rules).
func TestMetricsDashboardQueries(t *testing.T) {
	raw, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	var queries []string
	exprs(d, &queries)
	if len(queries) < 10 {
		t.Fatalf("only %d queries in the dashboard", len(queries))
	}

	served := map[string]bool{}
	for name := range parse(t, scrape(t, newHandler(t, func() ([]loader.ParentSnapshot, error) { return fixture(), nil }))) {
		served[name] = true
	}
	name := regexp.MustCompile(`xmacvlan_[a-z_]+`)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$parent", ".*", "$network", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard\n  rules:\n")
	for i, q := range queries {
		for _, m := range name.FindAllString(q, -1) {
			if !served[m] {
				t.Errorf("the dashboard queries %s, which the exporter does not serve: %s", m, q)
			}
		}
		if strings.HasPrefix(q, "label_values(") {
			continue // a Grafana function, not PromQL
		}
		expr, _ := json.Marshal(vars.Replace(q)) // a JSON string is a YAML string
		rules.WriteString("  - record: dashboard:q" + string(rune('a'+i%26)) + "\n    expr: " + string(expr) + "\n")
	}

	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and promtool is missing (apt-get install prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n%s", err, out, rules.String())
	}
}
