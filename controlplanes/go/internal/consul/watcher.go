// Package consul keeps the control plane's view of the mesh in step with
// Consul through blocking queries: one for the service list, one per
// service for its health, one for the KV policy tree under meshbed/.
//
// A failed query never changes the view: an unreachable, slow or failing
// Consul must not look like an empty catalog. The failing watch keeps the
// last known good answer, backs off, and resyncs from index 0 when Consul
// answers again. Only a successful answer changes endpoints.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/policy"
)

// Back-off between failed queries, and the pause when Consul gives no usable index.
const (
	BackoffMin = 200 * time.Millisecond
	BackoffMax = time.Second
	noIndexGap = 50 * time.Millisecond
)

// NextIndex applies the blocking-query index rules: a missing, zero or
// backwards index restarts from 0 (a full read).
func NextIndex(old, got uint64) uint64 {
	if got == 0 || got < old {
		return 0
	}
	return got
}

// Options configure a Watcher.
type Options struct {
	// Wait is the blocking-query wait (Consul caps it at 10 min); default 30 s.
	Wait time.Duration
	// OnChange is called (without locks held) after each change once the first sync is done,
	// and once at the first sync. It must not block.
	OnChange func()
	// Validate vets a parsed service policy beyond parsing (e.g. that Envoy would accept it);
	// an error keeps the previous policy of the service, like bad JSON.
	Validate func(service string, p policy.Service) error
	Logger   *slog.Logger
}

// Stats describe the watcher's health for the debug API.
type Stats struct {
	URL             string   `json:"url"`
	Synced          bool     `json:"synced"`
	Up              bool     `json:"up"`
	Errors          int      `json:"errors"`
	LastError       string   `json:"last_error"`
	LastErrorAt     float64  `json:"last_error_at"`
	LastOKAt        float64  `json:"last_ok_at"`
	SyncedAt        float64  `json:"synced_at"`
	Changes         int      `json:"changes"`
	WatchedServices []string `json:"watched_services"`
}

type healthWatch struct {
	cancel context.CancelFunc
	seen   bool
}

// Watcher watches Consul and publishes immutable catalog.State values.
type Watcher struct {
	client *api.Client
	url    string
	opts   Options
	log    *slog.Logger

	mu           sync.Mutex
	state        catalog.State
	synced       bool
	health       map[string]*healthWatch
	servicesSeen bool
	kvSeen       bool
	stats        Stats
	runCtx       context.Context
	wg           sync.WaitGroup
}

// New makes a watcher for the Consul HTTP API at url (e.g. http://127.0.0.1:8500).
func New(url string, opts Options) (*Watcher, error) {
	if opts.Wait <= 0 {
		opts.Wait = 30 * time.Second
	}
	if opts.OnChange == nil {
		opts.OnChange = func() {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg := api.DefaultConfig()
	cfg.Address = url
	// one long poll per watched service: keep their connections instead of re-dialling
	cfg.Transport.MaxIdleConnsPerHost = 256
	cfg.HttpClient = &http.Client{Transport: cfg.Transport}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", url, err)
	}
	return &Watcher{
		client: client,
		url:    url,
		opts:   opts,
		log:    opts.Logger,
		state:  catalog.NewState(),
		health: map[string]*healthWatch{},
		stats:  Stats{URL: url},
	}, nil
}

// State is the current view (never mutated: safe to read without locks).
func (w *Watcher) State() catalog.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Synced reports whether the first full sync (services, each one's health, KV) is done.
func (w *Watcher) Synced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced
}

// Stats returns a copy of the watcher's counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Synced = w.synced
	s.WatchedServices = slices.Sorted(maps.Keys(w.health))
	return s
}

// Run watches until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	w.mu.Lock()
	w.runCtx = ctx
	w.mu.Unlock()
	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.loop(ctx, "services", w.fetchServices) }()
	go func() { defer w.wg.Done(); w.loop(ctx, "kv", w.fetchKV) }()
	<-ctx.Done()
	w.mu.Lock()
	for _, h := range w.health {
		h.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// fetch does one (blocking) query from index and applies a successful answer; it returns the answer's index.
type fetch func(ctx context.Context, index uint64) (uint64, error)

func (w *Watcher) loop(ctx context.Context, name string, f fetch) {
	var index uint64
	backoff := BackoffMin
	failing := false
	for ctx.Err() == nil {
		got, err := w.query(ctx, index, f)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.noteError(name, err, !failing)
			failing = true
			index = 0 // resync from scratch once Consul answers again
			sleep(ctx, backoff)
			backoff = min(2*backoff, BackoffMax)
			continue
		}
		backoff = BackoffMin
		if failing {
			w.log.Info("consul answered again; resynced from index 0", "watch", name)
			failing = false
		}
		w.noteOK()
		prev := index
		index = NextIndex(index, got)
		if index == 0 && prev == 0 {
			sleep(ctx, noIndexGap) // no usable index: don't spin
		}
	}
}

// query bounds one call: a blocking query may take wait + wait/16 (Consul's jitter); then some slack.
func (w *Watcher) query(ctx context.Context, index uint64, f fetch) (uint64, error) {
	limit := 10 * time.Second
	if index > 0 {
		limit = w.opts.Wait + w.opts.Wait/16 + 5*time.Second
	}
	qctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	got, err := f(qctx, index)
	if err != nil && errors.Is(qctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		err = fmt.Errorf("no answer within %s: %w", limit, err)
	}
	return got, err
}

func (w *Watcher) queryOptions(ctx context.Context, index uint64) *api.QueryOptions {
	q := &api.QueryOptions{}
	if index > 0 {
		q.WaitIndex = index
		q.WaitTime = w.opts.Wait
	}
	return q.WithContext(ctx)
}

func (w *Watcher) fetchServices(ctx context.Context, index uint64) (uint64, error) {
	svcs, meta, err := w.client.Catalog().Services(w.queryOptions(ctx, index))
	if err != nil {
		return 0, err
	}
	w.onServices(slices.Sorted(maps.Keys(svcs)))
	return meta.LastIndex, nil
}

func (w *Watcher) fetchKV(ctx context.Context, index uint64) (uint64, error) {
	pairs, meta, err := w.client.KV().List(policy.KVPrefix, w.queryOptions(ctx, index))
	if err != nil {
		return 0, err
	}
	entries := make([]policy.Entry, 0, len(pairs))
	for _, p := range pairs {
		entries = append(entries, policy.Entry{Key: p.Key, Value: p.Value})
	}
	w.onKV(entries)
	return meta.LastIndex, nil
}

func (w *Watcher) fetchHealth(service string, hw *healthWatch) fetch {
	return func(ctx context.Context, index uint64) (uint64, error) {
		entries, meta, err := w.client.Health().Service(service, "", false, w.queryOptions(ctx, index))
		if err != nil {
			return 0, err
		}
		insts, skipped := catalog.FromHealthEntries(service, entries)
		for _, id := range skipped {
			w.log.Warn("consul: skipping instance without address/port", "service", service, "id", id)
		}
		w.onHealth(service, hw, insts)
		return meta.LastIndex, nil
	}
}

// -- state updates (each publishes a new State) --------------------------------

func (w *Watcher) onServices(names []string) {
	w.mu.Lock()
	changed := false
	for _, svc := range names {
		if _, ok := w.health[svc]; ok || w.runCtx == nil {
			continue
		}
		ctx, cancel := context.WithCancel(w.runCtx)
		hw := &healthWatch{cancel: cancel}
		w.health[svc] = hw
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.loop(ctx, "health/"+svc, w.fetchHealth(svc, hw)) }()
	}
	for svc, hw := range w.health {
		if slices.Contains(names, svc) {
			continue
		}
		hw.cancel()
		delete(w.health, svc)
		if _, ok := w.state.Services[svc]; ok {
			next := w.state.Clone()
			delete(next.Services, svc)
			w.state = next
			changed = true
			w.log.Info("consul: service gone from the catalog", "service", svc)
		}
	}
	w.servicesSeen = true
	notify := w.afterUpdate(changed)
	w.mu.Unlock()
	notify()
}

func (w *Watcher) onHealth(service string, hw *healthWatch, insts []catalog.Instance) {
	w.mu.Lock()
	if w.health[service] != hw { // removed (or replaced) meanwhile: a late answer
		w.mu.Unlock()
		return
	}
	changed := false
	if old, ok := w.state.Services[service]; !ok || !slices.Equal(old, insts) {
		next := w.state.Clone()
		next.Services[service] = insts
		w.state = next
		changed = true
		w.log.Info("consul: instances changed", "service", service, "instances", len(insts),
			"healthy", catalog.CountHealthy(insts))
	}
	hw.seen = true
	notify := w.afterUpdate(changed)
	w.mu.Unlock()
	notify()
}

func (w *Watcher) onKV(entries []policy.Entry) {
	w.mu.Lock()
	res := policy.FromKV(entries, w.state.Policies, w.state.Mesh)
	for _, err := range res.Errors {
		w.log.Error("consul kv: bad policy, keeping the previous one", "error", err)
	}
	if w.opts.Validate != nil {
		for svc, p := range res.Services {
			if err := w.opts.Validate(svc, p); err != nil {
				w.log.Error("consul kv: policy Envoy would reject, keeping the previous one", "service", svc, "error", err)
				if old, ok := w.state.Policies[svc]; ok {
					res.Services[svc] = old
				} else {
					delete(res.Services, svc)
				}
			}
		}
	}
	changed := res.Mesh != w.state.Mesh || !maps.EqualFunc(res.Services, w.state.Policies, policy.Service.Equal)
	if changed {
		next := w.state.Clone()
		next.Policies, next.Mesh = res.Services, res.Mesh
		w.state = next
		w.log.Info("consul: policy changed", "services", slices.Sorted(maps.Keys(res.Services)),
			"sampling_percent", res.Mesh.SamplingPercent)
	}
	w.kvSeen = true
	notify := w.afterUpdate(changed)
	w.mu.Unlock()
	notify()
}

// afterUpdate (with mu held) counts a change, completes the first sync when
// everything has answered once, and returns what to call after unlocking.
func (w *Watcher) afterUpdate(changed bool) func() {
	if changed {
		w.stats.Changes++
	}
	if w.synced {
		if changed {
			return w.opts.OnChange
		}
		return func() {}
	}
	if !w.servicesSeen || !w.kvSeen {
		return func() {}
	}
	for _, hw := range w.health {
		if !hw.seen {
			return func() {}
		}
	}
	w.synced = true
	w.stats.SyncedAt = unixNow()
	w.log.Info("consul: first sync done", "services", len(w.state.Services))
	return w.opts.OnChange
}

func (w *Watcher) noteError(name string, err error, first bool) {
	w.mu.Lock()
	w.stats.Errors++
	w.stats.LastError = name + ": " + err.Error()
	w.stats.LastErrorAt = unixNow()
	w.stats.Up = false
	w.mu.Unlock()
	if first {
		w.log.Warn("consul query failed; keeping the last known state, retrying", "watch", name, "error", err)
	}
}

func (w *Watcher) noteOK() {
	w.mu.Lock()
	w.stats.Up = true
	w.stats.LastOKAt = unixNow()
	w.mu.Unlock()
}

func unixNow() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
