// Package server wires the Consul watcher to go-control-plane's snapshot
// cache and xDS server (state-of-the-world and delta ADS on one gRPC port),
// keeps per-node snapshots current, and records pushes and ACK/NACKs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/consul"
	"meshbed.local/controlplanes/go/internal/nodemeta"
	"meshbed.local/controlplanes/go/internal/pushlog"
	"meshbed.local/controlplanes/go/internal/resources"
)

// ShutdownGrace is how long the gRPC server may take to stop after SIGTERM
// (streams are ended first) before it is stopped hard.
const ShutdownGrace = time.Second

// Source is what the server needs from the Consul side.
type Source interface {
	State() catalog.State
	Synced() bool
	Stats() consul.Stats
}

// node is one connected Envoy (by node id) and the snapshot it was last given.
type node struct {
	meta    nodemeta.Meta
	streams int
	snap    *resources.Snapshot
}

// ControlPlane owns the snapshot cache and the per-node state.
type ControlPlane struct {
	log     *slog.Logger
	source  Source
	cache   cache.SnapshotCache
	pushlog *pushlog.Log

	// pushMu serialises building and setting snapshots: a node's snapshots
	// are set in the order of the states they were built from.
	pushMu sync.Mutex
	nodes  map[string]*node

	streams *streams
	dirty   chan struct{}
	pushes  int
}

// New makes a control plane reading state from source.
func New(source Source, logger *slog.Logger, pushlogSize int) *ControlPlane {
	cp := &ControlPlane{
		log:     logger,
		source:  source,
		pushlog: pushlog.New(pushlogSize),
		nodes:   map[string]*node{},
		dirty:   make(chan struct{}, 1),
	}
	// ads=true: respond in type order (CDS, EDS, LDS, RDS) and only to
	// EDS/RDS requests naming every resource of the snapshot
	cp.cache = cache.NewSnapshotCache(true, cache.IDHash{}, cacheLogger{logger})
	cp.streams = newStreams(cp)
	return cp
}

// Notify marks the state changed: the push loop rebuilds every node's
// snapshot as soon as it is free. Changes that arrive while it builds are
// coalesced into one more round. Never blocks.
func (cp *ControlPlane) Notify() {
	select {
	case cp.dirty <- struct{}{}:
	default:
	}
}

// PushLoop rebuilds snapshots after every change until ctx is done.
func (cp *ControlPlane) PushLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-cp.dirty:
			cp.pushAll()
		}
	}
}

func (cp *ControlPlane) pushAll() {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	if !cp.source.Synced() {
		return
	}
	cp.pushes++
	st := cp.source.State()
	for id, n := range cp.nodes {
		cp.setSnapshot(id, n, st)
	}
}

// setSnapshot (pushMu held) gives node id the snapshot for st, unless nothing changed for it.
func (cp *ControlPlane) setSnapshot(id string, n *node, st catalog.State) {
	snap, err := resources.Build(n.meta, st)
	if err != nil {
		cp.log.Error("cannot build snapshot; node keeps its last one", "node", id, "error", err)
		return
	}
	if n.snap != nil && sameVersions(n.snap, snap) {
		return
	}
	if err := cp.cache.SetSnapshot(context.Background(), id, snap); err != nil {
		cp.log.Error("cannot set snapshot", "node", id, "error", err)
		return
	}
	n.snap = snap
}

func sameVersions(a, b *resources.Snapshot) bool {
	for _, t := range resources.TypeOrder {
		if a.GetVersion(t) != b.GetVersion(t) {
			return false
		}
	}
	return true
}

// acquire registers one more stream of node id (first request on a stream).
func (cp *ControlPlane) acquire(id string, meta nodemeta.Meta) {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	n := cp.nodes[id]
	if n == nil {
		n = &node{}
		cp.nodes[id] = n
	}
	n.streams++
	if n.snap != nil && !sameMeta(n.meta, meta) {
		n.snap = nil // the node changed what it is: rebuild
	}
	n.meta = meta
	if cp.source.Synced() {
		cp.setSnapshot(id, n, cp.source.State())
	}
}

// release drops one stream of node id; the last one drops its snapshot.
func (cp *ControlPlane) release(id string) {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	n := cp.nodes[id]
	if n == nil {
		return
	}
	n.streams--
	if n.streams <= 0 {
		delete(cp.nodes, id)
		cp.cache.ClearSnapshot(id)
	}
}

func sameMeta(a, b nodemeta.Meta) bool { return reflect.DeepEqual(a, b) }

// SnapshotOf returns the snapshot node id was last given (nil if none).
func (cp *ControlPlane) SnapshotOf(id string) *resources.Snapshot {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	if n := cp.nodes[id]; n != nil {
		return n.snap
	}
	return nil
}

// Serve runs the xDS gRPC server on xdsLis (and the debug API on httpLis
// if not nil) until ctx is done, then shuts both down.
func (cp *ControlPlane) Serve(ctx context.Context, xdsLis, httpLis net.Listener) error {
	xdsCtx, stopXDS := context.WithCancel(context.Background())
	defer stopXDS()
	srv := xds.NewServer(xdsCtx, cp.cache, cp.streams, sotw.WithOrderedADS())
	g := grpc.NewServer(
		// Envoy pings every 5 s (bootstrap connection_keepalive); allow it
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxConcurrentStreams(1<<20),
	)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, srv)

	errs := make(chan error, 2)
	go func() { errs <- g.Serve(xdsLis) }()
	var hs *http.Server
	if httpLis != nil {
		hs = &http.Server{Handler: cp.debugHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { errs <- hs.Serve(httpLis) }()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
		err = fmt.Errorf("server stopped: %w", err)
	}
	cp.log.Info("shutting down")
	stopXDS() // ends every stream now rather than after the grace
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(ShutdownGrace):
		g.Stop()
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
		defer cancel()
		if e := hs.Shutdown(sctx); e != nil && !errors.Is(e, http.ErrServerClosed) {
			hs.Close()
		}
	}
	return err
}

// nodeIDs lists the connected node ids, sorted.
func (cp *ControlPlane) nodeIDs() []string {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	ids := make([]string, 0, len(cp.nodes))
	for id := range cp.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// cacheLogger routes go-control-plane's logging into slog; its warnings are
// routine here (e.g. an EDS request naming fewer clusters than a new CDS), so debug.
type cacheLogger struct{ l *slog.Logger }

var _ log.Logger = cacheLogger{}

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Debug(fmt.Sprintf(f, a...), "from", "cache") }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...), "from", "cache") }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...), "from", "cache") }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...), "from", "cache") }
