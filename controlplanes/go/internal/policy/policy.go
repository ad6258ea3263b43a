// Package policy parses meshbed's traffic policy from Consul KV:
// meshbed/services/<service> (ServicePolicy) and meshbed/mesh (MeshPolicy).
//
// The rules follow meshbed's policy.py: unknown fields are errors, integers
// must be non-negative integers (not floats, not booleans), and a key whose
// value is bad keeps the previous good policy of that service.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Consul KV layout.
const (
	KVPrefix         = "meshbed/"
	KVServicesPrefix = "meshbed/services/"
	KVMeshKey        = "meshbed/mesh"
)

// LBPolicies are the accepted values of lb_policy.
var LBPolicies = []string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"}

var headerName = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

// Retries is the route retry policy.
type Retries struct {
	RetryOn         string `json:"retry_on"`
	NumRetries      uint32 `json:"num_retries"`
	PerTryTimeoutMS uint32 `json:"per_try_timeout_ms"` // 0: no per-try timeout
}

// OutlierDetection is the cluster's passive health checking.
type OutlierDetection struct {
	Consecutive5xx     uint32 `json:"consecutive_5xx"`
	IntervalMS         uint32 `json:"interval_ms"`
	BaseEjectionTimeMS uint32 `json:"base_ejection_time_ms"`
	MaxEjectionPercent uint32 `json:"max_ejection_percent"`
}

// CircuitBreaker is the cluster's default-priority thresholds.
type CircuitBreaker struct {
	MaxConnections     uint32 `json:"max_connections"`
	MaxPendingRequests uint32 `json:"max_pending_requests"`
	MaxRequests        uint32 `json:"max_requests"`
	MaxRetries         uint32 `json:"max_retries"`
}

// Service is one service's traffic policy.
type Service struct {
	LBPolicy         string            `json:"lb_policy"`
	HashHeader       string            `json:"hash_header"`
	Weights          map[string]uint32 `json:"weights"`
	TimeoutMS        uint32            `json:"timeout_ms"`
	Retries          *Retries          `json:"retries"`
	OutlierDetection *OutlierDetection `json:"outlier_detection"`
	CircuitBreaker   *CircuitBreaker   `json:"circuit_breaker"`
}

// Mesh holds mesh-wide settings.
type Mesh struct {
	// percent of new traces sampled at the edge (ingress)
	SamplingPercent float64 `json:"sampling_percent"`
}

// DefaultService is the policy of a service without a KV key.
func DefaultService() Service {
	return Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 15000, Weights: map[string]uint32{}}
}

// DefaultMesh is the mesh policy without a KV key.
func DefaultMesh() Mesh { return Mesh{SamplingPercent: 100} }

// Versions are the weighted versions, sorted.
func (s Service) Versions() []string { return slices.Sorted(maps.Keys(s.Weights)) }

// Equal compares two policies field by field.
func (s Service) Equal(o Service) bool {
	return s.LBPolicy == o.LBPolicy && s.HashHeader == o.HashHeader && s.TimeoutMS == o.TimeoutMS &&
		maps.Equal(s.Weights, o.Weights) && ptrEqual(s.Retries, o.Retries) &&
		ptrEqual(s.OutlierDetection, o.OutlierDetection) && ptrEqual(s.CircuitBreaker, o.CircuitBreaker)
}

func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// ParseService parses and validates one meshbed/services/<svc> value.
func ParseService(data []byte, where string) (Service, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return Service{}, fmt.Errorf("%s: %w", where, err)
	}
	known := []string{"lb_policy", "hash_header", "weights", "timeout_ms", "retries", "outlier_detection", "circuit_breaker"}
	if err := onlyKnown(obj, known, where); err != nil {
		return Service{}, err
	}
	p := DefaultService()
	if v, ok := obj["lb_policy"]; ok && v != nil {
		s, isStr := v.(string)
		if !isStr {
			return Service{}, fmt.Errorf("%s.lb_policy: must be a string", where)
		}
		p.LBPolicy = strings.ToUpper(s)
	}
	if !slices.Contains(LBPolicies, p.LBPolicy) {
		return Service{}, fmt.Errorf("%s.lb_policy: %q is not one of %s", where, p.LBPolicy, strings.Join(LBPolicies, ", "))
	}
	if v, ok := obj["hash_header"]; ok && v != nil {
		s, isStr := v.(string)
		if !isStr || (s != "" && !headerName.MatchString(s)) {
			return Service{}, fmt.Errorf("%s.hash_header: must be an HTTP header name, got %v", where, v)
		}
		p.HashHeader = s
	}
	if v, ok := obj["weights"]; ok && v != nil {
		w, isObj := v.(map[string]any)
		if !isObj {
			return Service{}, fmt.Errorf("%s.weights: must map version -> non-negative integer weight", where)
		}
		var sum uint64
		for ver, x := range w {
			n, err := nonNegInt(x)
			if err != nil {
				return Service{}, fmt.Errorf("%s.weights: must map version -> non-negative integer weight", where)
			}
			p.Weights[ver] = n
			sum += uint64(n)
		}
		if len(w) > 0 && sum == 0 {
			return Service{}, fmt.Errorf("%s.weights: weights must add up to more than 0", where)
		}
		if sum > 1<<32-1 {
			return Service{}, fmt.Errorf("%s.weights: weights add up to more than 2^32-1", where)
		}
	}
	if v, ok := obj["timeout_ms"]; ok && v != nil {
		n, err := nonNegInt(v)
		if err != nil || n < 1 {
			return Service{}, fmt.Errorf("%s.timeout_ms: must be a positive integer (milliseconds), got %v", where, v)
		}
		p.TimeoutMS = n
	}
	if v, ok := obj["retries"]; ok && v != nil {
		r := Retries{RetryOn: "connect-failure,reset,5xx", NumRetries: 2}
		err := sub(v, where+".retries", map[string]any{
			"retry_on": &r.RetryOn, "num_retries": &r.NumRetries, "per_try_timeout_ms": &r.PerTryTimeoutMS,
		})
		if err != nil {
			return Service{}, err
		}
		p.Retries = &r
	}
	if v, ok := obj["outlier_detection"]; ok && v != nil {
		o := OutlierDetection{Consecutive5xx: 5, IntervalMS: 1000, BaseEjectionTimeMS: 10000, MaxEjectionPercent: 50}
		err := sub(v, where+".outlier_detection", map[string]any{
			"consecutive_5xx": &o.Consecutive5xx, "interval_ms": &o.IntervalMS,
			"base_ejection_time_ms": &o.BaseEjectionTimeMS, "max_ejection_percent": &o.MaxEjectionPercent,
		})
		if err != nil {
			return Service{}, err
		}
		// Envoy rejects these (PGV rules): refuse them here, so the previous policy stays
		if o.IntervalMS == 0 || o.BaseEjectionTimeMS == 0 {
			return Service{}, fmt.Errorf("%s.outlier_detection: interval_ms and base_ejection_time_ms must be > 0", where)
		}
		if o.MaxEjectionPercent > 100 {
			return Service{}, fmt.Errorf("%s.outlier_detection.max_ejection_percent: %d is over 100", where, o.MaxEjectionPercent)
		}
		p.OutlierDetection = &o
	}
	if v, ok := obj["circuit_breaker"]; ok && v != nil {
		c := CircuitBreaker{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}
		err := sub(v, where+".circuit_breaker", map[string]any{
			"max_connections": &c.MaxConnections, "max_pending_requests": &c.MaxPendingRequests,
			"max_requests": &c.MaxRequests, "max_retries": &c.MaxRetries,
		})
		if err != nil {
			return Service{}, err
		}
		p.CircuitBreaker = &c
	}
	return p, nil
}

// ParseMesh parses the meshbed/mesh value; unknown fields are ignored, as in policy.py.
func ParseMesh(data []byte) (Mesh, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return Mesh{}, fmt.Errorf("%s: %w", KVMeshKey, err)
	}
	m := DefaultMesh()
	if v, ok := obj["sampling_percent"]; ok {
		var pct float64
		switch x := v.(type) {
		case json.Number:
			pct, err = x.Float64()
		case string:
			pct, err = strconv.ParseFloat(strings.TrimSpace(x), 64)
		default:
			err = errors.New("not a number")
		}
		if err != nil {
			return Mesh{}, fmt.Errorf("mesh.sampling_percent: must be a number")
		}
		m.SamplingPercent = pct
	}
	if !(m.SamplingPercent >= 0 && m.SamplingPercent <= 100) {
		return Mesh{}, fmt.Errorf("mesh.sampling_percent: %v is outside 0..100", m.SamplingPercent)
	}
	return m, nil
}

// Entry is one KV pair under meshbed/.
type Entry struct {
	Key   string
	Value []byte
}

// KVResult is the policy state derived from one recursive KV read.
type KVResult struct {
	Services map[string]Service
	Mesh     Mesh
	Errors   []error // bad keys (their previous policy was kept)
}

// FromKV turns a recursive read of meshbed/ into policies. A nil or empty
// entries list (a 404) means defaults. A key whose value is bad keeps the
// previous good policy of that service (or mesh), so a typo never drops a route.
func FromKV(entries []Entry, prevServices map[string]Service, prevMesh Mesh) KVResult {
	res := KVResult{Services: map[string]Service{}, Mesh: DefaultMesh()}
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Key, KVServicesPrefix):
			svc := strings.Trim(strings.TrimPrefix(e.Key, KVServicesPrefix), "/")
			if svc == "" {
				continue
			}
			p, err := ParseService(e.Value, e.Key)
			if err != nil {
				res.Errors = append(res.Errors, err)
				if old, ok := prevServices[svc]; ok {
					res.Services[svc] = old
				}
				continue
			}
			res.Services[svc] = p
		case e.Key == KVMeshKey:
			m, err := ParseMesh(e.Value)
			if err != nil {
				res.Errors = append(res.Errors, err)
				m = prevMesh
			}
			res.Mesh = m
		}
	}
	return res
}

func decodeObject(data []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty value")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("bad JSON: trailing data")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be a mapping, got %T", v)
	}
	return obj, nil
}

func onlyKnown(obj map[string]any, known []string, where string) error {
	var unknown []string
	for k := range obj {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("%s: unknown field(s) %v; known: %v", where, unknown, known)
	}
	return nil
}

// nonNegInt accepts JSON integers 0..2^32-1 (not floats, not booleans).
func nonNegInt(v any) (uint32, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("not an integer: %v", v)
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || i < 0 || i > 1<<32-1 {
		return 0, fmt.Errorf("not a non-negative integer: %v", v)
	}
	return uint32(i), nil
}

// sub fills a nested policy object: fields are *string or *uint32 destinations.
func sub(v any, where string, fields map[string]any) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: must be a mapping", where)
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		dst, known := fields[k]
		if !known {
			return fmt.Errorf("%s.%s: unknown field; known: %s", where, k, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
		}
		x := obj[k]
		switch d := dst.(type) {
		case *string:
			s, isStr := x.(string)
			if !isStr {
				return fmt.Errorf("%s.%s: must be a string, got %v", where, k, x)
			}
			*d = s
		case *uint32:
			n, err := nonNegInt(x)
			if err != nil {
				return fmt.Errorf("%s.%s: must be a non-negative integer, got %v", where, k, x)
			}
			*d = n
		}
	}
	return nil
}
