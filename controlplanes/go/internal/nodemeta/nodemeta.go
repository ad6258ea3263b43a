// Package nodemeta reads what an Envoy says about itself in its node
// metadata (key "meshbed"): its role, ports, local app and upstreams.
package nodemeta

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Key is the node metadata key meshbed writes into every bootstrap.
const Key = "meshbed"

// Roles a node can have.
const (
	RoleSidecar = "sidecar"
	RoleIngress = "ingress"
)

// Route is an ingress route: requests whose path starts with Prefix go to Service.
type Route struct {
	Prefix  string `json:"prefix"`
	Service string `json:"service"`
}

// Meta is one Envoy's description of itself.
type Meta struct {
	Role          string   `json:"role"`
	Service       string   `json:"service"`
	Instance      string   `json:"instance"`
	ListenAddress string   `json:"listen_address"`
	InboundPort   uint32   `json:"inbound_port"`
	AppAddress    string   `json:"app_address"`
	OutboundPort  uint32   `json:"outbound_port"`
	Upstreams     []string `json:"upstreams"`
	Routes        []Route  `json:"routes"`
	TraceCluster  string   `json:"trace_cluster"`
	TraceService  string   `json:"trace_service"`
	AccessLogPath string   `json:"access_log_path"`
}

// FromNode reads node.metadata.meshbed; an error says what is missing or wrong.
func FromNode(node *corev3.Node) (Meta, error) {
	if node == nil || node.GetId() == "" {
		return Meta{}, errors.New("request carries no node id")
	}
	v, ok := node.GetMetadata().GetFields()[Key]
	if !ok || v.GetStructValue() == nil {
		return Meta{}, fmt.Errorf("node %q has no metadata.%s", node.GetId(), Key)
	}
	m, err := FromStruct(v.GetStructValue())
	if err != nil {
		return Meta{}, fmt.Errorf("node %q: bad metadata.%s: %w", node.GetId(), Key, err)
	}
	return m, nil
}

// FromStruct parses the "meshbed" struct with the same defaults as meshbed's nodemeta.py.
func FromStruct(s *structpb.Struct) (Meta, error) {
	f := s.GetFields()
	m := Meta{ListenAddress: "127.0.0.1", TraceCluster: "jaeger_otlp"}
	var err error
	if m.Role, err = requiredString(f, "role"); err != nil {
		return Meta{}, err
	}
	if m.Role != RoleSidecar && m.Role != RoleIngress {
		return Meta{}, fmt.Errorf("role %q is not %s or %s", m.Role, RoleSidecar, RoleIngress)
	}
	if m.Service, err = requiredString(f, "service"); err != nil {
		return Meta{}, err
	}
	if m.Instance, err = requiredString(f, "instance"); err != nil {
		return Meta{}, err
	}
	m.ListenAddress = optString(f, "listen_address", m.ListenAddress)
	m.AppAddress = optString(f, "app_address", "")
	m.TraceCluster = optString(f, "trace_cluster", m.TraceCluster)
	m.TraceService = optString(f, "trace_service", "")
	m.AccessLogPath = optString(f, "access_log_path", "")
	if m.InboundPort, err = optPort(f, "inbound_port"); err != nil {
		return Meta{}, err
	}
	if m.OutboundPort, err = optPort(f, "outbound_port"); err != nil {
		return Meta{}, err
	}
	for _, u := range f["upstreams"].GetListValue().GetValues() {
		m.Upstreams = append(m.Upstreams, scalarString(u))
	}
	for i, r := range f["routes"].GetListValue().GetValues() {
		rf := r.GetStructValue().GetFields()
		p, perr := requiredString(rf, "prefix")
		s, serr := requiredString(rf, "service")
		if perr != nil || serr != nil {
			return Meta{}, fmt.Errorf("routes[%d]: needs prefix and service", i)
		}
		m.Routes = append(m.Routes, Route{Prefix: p, Service: s})
	}
	return m, nil
}

// Services are the services whose endpoints the node needs, in order, unique:
// a sidecar's upstreams, or the targets of an ingress's routes.
func (m Meta) Services() []string {
	var names []string
	if m.Role == RoleSidecar {
		names = m.Upstreams
	} else {
		for _, r := range m.Routes {
			names = append(names, r.Service)
		}
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func scalarString(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(k.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue)
	}
	return ""
}

func requiredString(f map[string]*structpb.Value, key string) (string, error) {
	v, ok := f[key]
	if !ok {
		return "", fmt.Errorf("missing %q", key)
	}
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull {
		return "", fmt.Errorf("missing %q", key)
	}
	return scalarString(v), nil
}

func optString(f map[string]*structpb.Value, key, def string) string {
	v, ok := f[key]
	if !ok {
		return def
	}
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull {
		return def
	}
	return scalarString(v)
}

func optPort(f map[string]*structpb.Value, key string) (uint32, error) {
	v, ok := f[key]
	if !ok {
		return 0, nil
	}
	var n float64
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return 0, nil
	case *structpb.Value_NumberValue:
		n = k.NumberValue
	case *structpb.Value_StringValue:
		if k.StringValue == "" {
			return 0, nil
		}
		p, err := strconv.ParseFloat(k.StringValue, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a port", key, k.StringValue)
		}
		n = p
	default:
		return 0, fmt.Errorf("%s: not a number", key)
	}
	if n < 0 || n > 65535 || n != math.Trunc(n) {
		return 0, fmt.Errorf("%s: %v is not a port", key, n)
	}
	return uint32(n), nil
}
