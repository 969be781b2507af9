package server

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/config"
)

// nodeFields matches the fields naming the nodes that did not answer.
var nodeFields = regexp.MustCompile(`,?"(unanswered|from_bucket)_nodes":\["[^\]]*\]`)

// withoutNodeFields is a JSON answer without the fields naming the nodes
// that did not answer: for comparing answers before and after a stop.
func withoutNodeFields(s string) string { return nodeFields.ReplaceAllString(s, "") }

// Every merged answer says which nodes did not answer: tracedx's own
// (findings summary, root-cause ranking, RED, service map) in JSON
// fields, the Jaeger-compatible ones in a header; with every node up
// they say nothing.
func TestMergedAnswersNameTheNodesThatDidNotAnswerOnS3(t *testing.T) {
	sp := stopPeerWithHistory(t, func(*config.Config) {})
	for _, body := range sp.raw {
		if strings.Contains(body, "_nodes") {
			t.Fatalf("an answer with every node up names nodes: %s", body)
		}
	}
	to := time.Now().Truncate(time.Minute).Add(time.Minute)
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	for _, path := range append([]string{
		"/api/v1/findings/summary?kind=slow_query",
		"/api/v1/metrics/services?start=" + ms(to.Add(-time.Hour)) + "&end=" + ms(to),
		"/api/v1/metrics/series?service=api&start=" + ms(to.Add(-time.Hour)) + "&end=" + ms(to),
	}, sp.paths...) {
		var v answered.Nodes
		getJSON(t, sp.n0, path, &v)
		if !slices.Equal(v.Unanswered, []string{"n1"}) || !slices.Equal(v.FromBucket, []string{"n1"}) {
			t.Errorf("%s with n1 stopped: unanswered %v, from the bucket %v; want n1 for both", path, v.Unanswered, v.FromBucket)
		}
	}
	// The root-cause ranking reads the findings (n1's from the bucket)
	// and traces (n1's recent spans are only on n1).
	var rc struct {
		answered.Nodes
		Causes []json.RawMessage `json:"causes"`
	}
	getJSON(t, sp.n0, "/api/v1/rootcause?service=api&from="+ms(to.Add(-25*time.Minute))+"&to="+ms(to), &rc)
	if !slices.Equal(rc.Unanswered, []string{"n1"}) || !slices.Equal(rc.FromBucket, []string{"n1"}) {
		t.Errorf("root-cause ranking with n1 stopped: unanswered %v, from the bucket %v; want n1 for both", rc.Unanswered, rc.FromBucket)
	}
	// Jaeger's shapes are Jaeger's: a header says it.
	resp, err := http.Get("http://" + sp.n0.Addr("http") + "/api/dependencies?endTs=" + ms(to) + "&lookback=3600000")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(answered.Header); resp.StatusCode != http.StatusOK || got != "n1" || resp.Header.Get(answered.HeaderFromBucket) != "n1" {
		t.Errorf("Jaeger dependencies with n1 stopped: %s, %s %q, %s %q; want n1 in both", resp.Status,
			answered.Header, got, answered.HeaderFromBucket, resp.Header.Get(answered.HeaderFromBucket))
	}
}
