package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every rule has exactly one owner among the nodes that answer; a node
// that stops answering hands its rules to the others and leaves theirs
// where they were, and the rate share grows with fewer nodes.
func TestMembersSplitRulesBetweenAnsweringNodes(t *testing.T) {
	sec := Security{Token: "peer-token-0123456789"}
	var servers []*httptest.Server
	var peers []Peer
	for i := 0; i < 3; i++ {
		mux := http.NewServeMux()
		RegisterMemberRoutes(mux, sec)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		servers = append(servers, srv)
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: "127.0.0.1:1", HTTP: strings.TrimPrefix(srv.URL, "http://")})
	}
	members := make([]*Members, 3)
	for i := range peers {
		ring, err := NewRing(peers, peers[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		members[i] = NewMembers(ring, sec, quiet)
	}
	ctx := context.Background()
	rules := make([]string, 60)
	for i := range rules {
		rules[i] = fmt.Sprintf("rule-%d", i)
	}
	owners := func(alive []int) map[string]int {
		out := map[string]int{}
		for _, r := range rules {
			n := 0
			for _, i := range alive {
				if members[i].Owns(r) {
					out[r] = i
					n++
				}
			}
			if n != 1 {
				t.Fatalf("rule %s has %d owners among nodes %v", r, n, alive)
			}
		}
		return out
	}
	for _, m := range members {
		m.Probe(ctx)
		if got := m.Healthy(); got != 3 {
			t.Fatalf("healthy nodes: %d, want 3", got)
		}
	}
	before := owners([]int{0, 1, 2})
	perNode := map[int]int{}
	for _, o := range before {
		perNode[o]++
	}
	if len(perNode) != 3 {
		t.Fatalf("60 rules fall on %d of 3 nodes: %v", len(perNode), perNode)
	}

	// Node 2 goes away.
	servers[2].Close()
	for _, m := range members[:2] {
		m.Probe(ctx)
		if got := m.Healthy(); got != 3 {
			t.Fatalf("healthy nodes after one missed probe: %d, want still 3", got)
		}
		m.Probe(ctx)
		if got := m.Healthy(); got != 2 {
			t.Fatalf("healthy nodes after one left: %d, want 2", got)
		}
	}
	after := owners([]int{0, 1})
	for r, o := range before {
		if o != 2 && after[r] != o {
			t.Fatalf("rule %s moved from node %d to %d though its node stayed", r, o, after[r])
		}
	}

	// A caller without the peer token is refused.
	resp, err := http.Get(servers[0].URL + pathAlive)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("probe without the peer token: %s", resp.Status)
	}
}
