package otelstoreexporter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
)

// startPostgres starts the throwaway PostgreSQL of scripts/pg.sh in the repository's .run/ (whose
// parents, unlike a 0700 t.TempDir, the postgres user can reach when the tests run as root).
func startPostgres(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".run", "go-test"))
	require.NoError(t, err)
	start := exec.Command(filepath.Join("..", "scripts", "pg.sh"), "start", dir)
	start.Stderr = os.Stderr
	out, err := start.Output()
	require.NoError(t, err, "scripts/pg.sh start %s", dir)
	t.Cleanup(func() {
		stop := exec.Command(filepath.Join("..", "scripts", "pg.sh"), "stop", dir)
		stop.Stderr = os.Stderr
		assert.NoError(t, stop.Run())
	})
	return strings.TrimSpace(string(out))
}

func psql(t *testing.T, dsn, query string) string {
	t.Helper()
	out, err := exec.Command("psql", "--no-psqlrc", "-Atc", query, dsn).CombinedOutput()
	require.NoError(t, err, "psql: %s", out)
	return strings.TrimSpace(string(out))
}

// TestExportCommitsToPostgres runs the three signal exporters of one configuration together, as a
// collector with a traces, a logs and a metrics pipeline does, and finds each request's rows.
func TestExportCommitsToPostgres(t *testing.T) {
	dsn := startPostgres(t)
	service := fmt.Sprintf("go-shim-test-%d", time.Now().UnixNano())
	cfg := synchronousConfig(func(cfg *Config) {
		cfg.Postgres.DSN = configopaque.String(dsn)
		cfg.Postgres.ConnectTimeout = Duration(10 * time.Second)
	})
	// The tables each signal's request writes one row to.
	tables := map[signal][]string{
		signalTraces:  {"spans"},
		signalLogs:    {"logs"},
		signalMetrics: {"metrics_gauge", "metrics_sum", "metrics_histogram", "metrics_exponential_histogram", "metrics_summary"},
	}

	exporters := make(map[signal]component.Component, len(allSignals))
	sends := make(map[signal]func(context.Context, string) error, len(allSignals))
	for _, sig := range allSignals {
		exporters[sig], sends[sig] = signalExporter(t, sig, cfg)
		require.NoError(t, exporters[sig].Start(context.Background(), componenttest.NewNopHost()))
		t.Cleanup(func() { assert.NoError(t, exporters[sig].Shutdown(context.Background())) })
	}
	// At once, into a database whose schema the first write may still have to create.
	errs := make(map[signal]chan error, len(allSignals))
	for _, sig := range allSignals {
		done, send := make(chan error, 1), sends[sig]
		errs[sig] = done
		go func() { done <- send(context.Background(), service) }()
	}
	for _, sig := range allSignals {
		t.Run(sig.String(), func(t *testing.T) {
			// With acknowledge: committed, a request that returned is in the database.
			require.NoError(t, <-errs[sig])
			for _, table := range tables[sig] {
				assert.Equal(t, "1", psql(t, dsn, fmt.Sprintf("SELECT count(*) FROM otel.%s WHERE service_name = '%s'", table, service)), table)
			}
		})
	}
}
