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

func TestExportCommitsToPostgres(t *testing.T) {
	dsn := startPostgres(t)
	service := fmt.Sprintf("go-shim-test-%d", time.Now().UnixNano())
	td := oneSpan()
	td.ResourceSpans().At(0).Resource().Attributes().PutStr("service.name", service)

	exp := synchronousExporter(t, func(cfg *Config) {
		cfg.Postgres.DSN = configopaque.String(dsn)
		cfg.Postgres.ConnectTimeout = Duration(10 * time.Second)
	})
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, exp.ConsumeTraces(context.Background(), td))
	require.NoError(t, exp.Shutdown(context.Background()))

	assert.Equal(t, "1", psql(t, dsn, fmt.Sprintf("SELECT count(*) FROM otel.spans WHERE service_name = '%s'", service)))
}
