package resources

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/nodemeta"
)

// TypeOrder is the order a change goes out in: clusters before their
// endpoints, listeners before their routes.
var TypeOrder = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// Short names of the four types, as in meshbed's push log.
var Short = map[string]string{
	resource.ClusterType:  "CDS",
	resource.EndpointType: "EDS",
	resource.ListenerType: "LDS",
	resource.RouteType:    "RDS",
}

// Snapshot is a node's complete resource set with content-hash versions:
// one per resource (for delta xDS) and one per type (for state of the
// world). Equal inputs give equal versions, also across control-plane
// restarts, so a reconnecting Envoy is sent nothing it already has.
//
// An endpoint assignment's version also covers its cluster: a changed
// cluster is re-created (warmed) by Envoy, which then waits for a fresh
// ClusterLoadAssignment even if the endpoints did not change; folding the
// cluster in makes the control plane send one, in SotW and in delta.
type Snapshot struct {
	*cache.Snapshot
	versions map[string]map[string]string // type URL -> resource name -> version
}

var _ cache.ResourceSnapshot = (*Snapshot)(nil)

// ConstructVersionMap is a no-op: versions are computed when the snapshot is built.
func (s *Snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap returns resource name -> version for one type (delta xDS).
func (s *Snapshot) GetVersionMap(typeURL string) map[string]string { return s.versions[typeURL] }

// Versions returns type short name (CDS, ...) -> version.
func (s *Snapshot) Versions() map[string]string {
	out := map[string]string{}
	for _, t := range TypeOrder {
		out[Short[t]] = s.GetVersion(t)
	}
	return out
}

// Names returns the resource names of one type, sorted.
func (s *Snapshot) Names(typeURL string) []string {
	names := make([]string, 0, len(s.versions[typeURL]))
	for n := range s.versions[typeURL] {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func digest(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// Build is everything one node should have, given the mesh state.
func Build(meta nodemeta.Meta, st catalog.State) (*Snapshot, error) {
	byType := map[string][]types.Resource{}
	for _, c := range Clusters(meta, st) {
		byType[resource.ClusterType] = append(byType[resource.ClusterType], c)
	}
	for _, e := range Endpoints(meta, st) {
		byType[resource.EndpointType] = append(byType[resource.EndpointType], e)
	}
	for _, l := range Listeners(meta, st.Mesh) {
		byType[resource.ListenerType] = append(byType[resource.ListenerType], l)
	}
	for _, r := range Routes(meta, st) {
		byType[resource.RouteType] = append(byType[resource.RouteType], r)
	}
	return NewSnapshot(byType)
}

// NewSnapshot indexes resources by name and versions them by content.
func NewSnapshot(byType map[string][]types.Resource) (*Snapshot, error) {
	s := &Snapshot{Snapshot: &cache.Snapshot{}, versions: map[string]map[string]string{}}
	marshal := proto.MarshalOptions{Deterministic: true}
	for _, t := range TypeOrder { // clusters first: endpoint versions include them
		vers := map[string]string{}
		for _, r := range byType[t] {
			name := cache.GetResourceName(r)
			if _, dup := vers[name]; dup {
				return nil, fmt.Errorf("duplicate %s resource %q", Short[t], name)
			}
			b, err := marshal.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", Short[t], name, err)
			}
			if t == resource.EndpointType {
				vers[name] = digest(b, []byte(s.versions[resource.ClusterType][name]))
			} else {
				vers[name] = digest(b)
			}
		}
		s.versions[t] = vers
		s.Resources[cache.GetResponseType(t)] = cache.NewResources(typeVersion(vers), byType[t])
	}
	if err := s.Consistent(); err != nil {
		return nil, err
	}
	return s, nil
}

// typeVersion hashes the sorted (name, version) pairs of one type.
func typeVersion(vers map[string]string) string {
	names := make([]string, 0, len(vers))
	for n := range vers {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([][]byte, 0, 2*len(names))
	for _, n := range names {
		parts = append(parts, []byte(n), []byte(vers[n]))
	}
	return digest(parts...)
}
