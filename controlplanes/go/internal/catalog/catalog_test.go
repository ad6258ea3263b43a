package catalog

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestCheckHealth(t *testing.T) {
	cases := []struct {
		statuses []string
		want     Health
	}{
		{nil, Healthy},
		{[]string{"passing"}, Healthy},
		{[]string{"passing", "warning"}, Degraded},
		{[]string{"warning", "critical"}, Unhealthy},
		{[]string{"passing", "critical"}, Unhealthy},
		{[]string{"maintenance"}, Unhealthy},
		{[]string{"PASSING"}, Healthy},
		{[]string{""}, Unhealthy},
	}
	for _, c := range cases {
		if got := CheckHealth(c.statuses); got != c.want {
			t.Errorf("CheckHealth(%v) = %s, want %s", c.statuses, got, c.want)
		}
	}
}

func entry(id, addr string, port int, meta map[string]string, statuses ...string) *api.ServiceEntry {
	e := &api.ServiceEntry{
		Node:    &api.Node{Address: "10.0.0.1"},
		Service: &api.AgentService{ID: id, Service: "backend", Address: addr, Port: port, Meta: meta},
	}
	for _, s := range statuses {
		e.Checks = append(e.Checks, &api.HealthCheck{Status: s})
	}
	return e
}

func TestFromHealthEntries(t *testing.T) {
	got, skipped := FromHealthEntries("backend", []*api.ServiceEntry{
		entry("backend-2", "127.0.0.1", 2002, map[string]string{"instance": "backend-2", "version": "v2"}, "passing"),
		entry("backend-1", "127.0.0.1", 2001, map[string]string{"instance": "backend-1", "version": "v1", "priority": "1"}, "passing", "critical"),
		entry("backend-3", "", 2003, nil, "warning"),
		entry("backend-4", "127.0.0.1", 0, nil),
	})
	if len(skipped) != 1 || skipped[0] != "backend-4" {
		t.Fatalf("skipped %v", skipped)
	}
	want := []Instance{
		{ID: "backend-2", Service: "backend", Address: "127.0.0.1", Port: 2002, Instance: "backend-2", Version: "v2", Health: Healthy},
		{ID: "backend-3", Service: "backend", Address: "10.0.0.1", Port: 2003, Instance: "backend-3", Health: Degraded},
		{ID: "backend-1", Service: "backend", Address: "127.0.0.1", Port: 2001, Instance: "backend-1", Version: "v1", Priority: 1, Health: Unhealthy},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}
