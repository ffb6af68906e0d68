package otelstoreexporter

// One core per configuration. The collector calls the factory once per signal with the same
// *Config for one component; its traces, logs and metrics exporters share one core handle, as the
// core is built to serve all three (one connection pool, one memory limit, one maintenance task).
// This is the idea of the collector's internal/sharedcomponent, with a reference count: the first
// Start creates the core and the last Shutdown shuts it down and forgets it, so a configuration
// reload (new *Config values) gets a fresh core.

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// sharedCores are the running cores, by the configuration they were made from.
var sharedCores = coreRegistry{cores: map[*Config]*sharedCore{}}

type coreRegistry struct {
	mu    sync.Mutex
	cores map[*Config]*sharedCore
}

// sharedCore is one core handle, its telemetry drain loop and the number of started signal
// exporters using it.
type sharedCore struct {
	handle    uint64
	telemetry *telemetry // of the signal exporter that started the core
	users     int
	stopDrain chan struct{}
	drainDone chan struct{}
}

// acquire returns the core of cfg, first creating it, with tel as its telemetry, when no signal
// exporter of cfg holds it.
func (r *coreRegistry) acquire(cfg *Config, tel *telemetry) (*sharedCore, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if core, ok := r.cores[cfg]; ok {
		core.users++
		return core, nil
	}
	configJSON, err := cfg.coreJSON()
	if err != nil {
		return nil, err
	}
	handle, err := coreNew(configJSON)
	if err != nil {
		return nil, err
	}
	core := &sharedCore{handle: handle, telemetry: tel, users: 1, stopDrain: make(chan struct{}), drainDone: make(chan struct{})}
	r.cores[cfg] = core
	go core.drainEvery(drainInterval)
	return core, nil
}

// release gives back one use of cfg's core and tells whether it was the last: the caller then shuts
// the core down, outside the lock, so a slow final flush delays no other configuration's Start.
func (r *coreRegistry) release(cfg *Config, core *sharedCore) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	core.users--
	if core.users > 0 {
		return false
	}
	if r.cores[cfg] == core {
		delete(r.cores, cfg)
	}
	return true
}

// drainEvery reads the core's telemetry every interval until shutdown closes stopDrain.
func (c *sharedCore) drainEvery(interval time.Duration) {
	defer close(c.drainDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-c.stopDrain:
			return
		case <-ticker.C:
			c.drain()
		}
	}
}

func (c *sharedCore) drain() {
	document, err := coreDrain(c.handle)
	if err != nil {
		c.telemetry.logger.Warn("reading the otelstore core's telemetry failed", zap.Error(err))
		return
	}
	c.telemetry.record(document)
}

// shutdown flushes and frees the core once no signal exporter uses it.
func (c *sharedCore) shutdown(ctx context.Context) error {
	close(c.stopDrain)
	<-c.drainDone
	shutdownErr := coreShutdown(c.handle, shutdownTimeout(ctx))
	// What the final flush did. Every signal exporter has left the telemetry's hosts by now: a
	// component may no longer report status once its Shutdown has begun.
	c.drain()
	return errors.Join(shutdownErr, coreFree(c.handle))
}
