// Package catalog turns Consul health answers into the instances the
// control plane routes to, and holds the control plane's view of the mesh.
package catalog

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"meshbed.local/controlplanes/go/internal/policy"
)

// Health of an instance, from its Consul checks.
type Health string

// The health values, named like Envoy's HealthStatus.
const (
	Healthy   Health = "HEALTHY"
	Degraded  Health = "DEGRADED"
	Unhealthy Health = "UNHEALTHY"
)

// Instance is one registered instance of a service.
type Instance struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	Address  string `json:"address"`
	Port     uint32 `json:"port"`
	Instance string `json:"instance"`
	Version  string `json:"version"`
	Zone     string `json:"zone"`
	Priority uint32 `json:"priority"`
	Health   Health `json:"health"`
}

// CheckHealth applies "worst check wins": any critical check (maintenance
// mode adds one) or any unknown status is UNHEALTHY, else any warning is
// DEGRADED, else HEALTHY (also with no checks at all).
func CheckHealth(statuses []string) Health {
	warning := false
	for _, s := range statuses {
		switch strings.ToLower(s) {
		case api.HealthPassing:
		case api.HealthWarning:
			warning = true
		default: // critical, maintenance, or anything unexpected
			return Unhealthy
		}
	}
	if warning {
		return Degraded
	}
	return Healthy
}

// FromHealthEntries turns /v1/health/service/<name> entries into sorted
// instances; unhealthy ones are kept (Envoy gets them marked), entries
// without an address or port are skipped and returned as such.
func FromHealthEntries(service string, entries []*api.ServiceEntry) (out []Instance, skipped []string) {
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		s := e.Service
		id := s.ID
		if id == "" {
			id = s.Service
		}
		addr := s.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address
		}
		if addr == "" || s.Port <= 0 || s.Port > 65535 {
			skipped = append(skipped, id)
			continue
		}
		statuses := make([]string, 0, len(e.Checks))
		for _, c := range e.Checks {
			statuses = append(statuses, c.Status)
		}
		inst := Instance{
			ID:       id,
			Service:  service,
			Address:  addr,
			Port:     uint32(s.Port),
			Instance: cmp.Or(s.Meta["instance"], id),
			Version:  s.Meta["version"],
			Zone:     s.Meta["zone"],
			Health:   CheckHealth(statuses),
		}
		if p, err := strconv.ParseUint(strings.TrimSpace(s.Meta["priority"]), 10, 32); err == nil {
			inst.Priority = uint32(p)
		}
		out = append(out, inst)
	}
	SortInstances(out)
	return out, skipped
}

// SortInstances orders by zone, priority, instance name, id.
func SortInstances(insts []Instance) {
	slices.SortFunc(insts, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Priority, b.Priority),
			cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.ID, b.ID))
	})
}

// State is everything the control plane believes about Consul at one moment.
// A State is never mutated after it is published: changes make a new one.
type State struct {
	Services map[string][]Instance     `json:"services"`
	Policies map[string]policy.Service `json:"policies"`
	Mesh     policy.Mesh               `json:"mesh"`
}

// NewState is the empty state (no services, default policies).
func NewState() State {
	return State{Services: map[string][]Instance{}, Policies: map[string]policy.Service{}, Mesh: policy.DefaultMesh()}
}

// Policy is the service's policy, or the default one.
func (s State) Policy(service string) policy.Service {
	if p, ok := s.Policies[service]; ok {
		return p
	}
	return policy.DefaultService()
}

// Clone copies the maps (their values are never mutated in place).
func (s State) Clone() State {
	return State{Services: maps.Clone(s.Services), Policies: maps.Clone(s.Policies), Mesh: s.Mesh}
}

// CountHealthy counts the healthy instances.
func CountHealthy(insts []Instance) int {
	n := 0
	for _, i := range insts {
		if i.Health == Healthy {
			n++
		}
	}
	return n
}
