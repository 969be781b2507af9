package tempo

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tracedx/tracedx/internal/api/tempo/tempopb"
)

// streamingQuerier answers Tempo's gRPC StreamingQuerier, which Grafana's
// Tempo data source uses for search, tag discovery and TraceQL metrics when
// streaming is on. Each call is translated to the matching HTTP query and
// answered by the same handler, whose JSON is Tempo's jsonpb rendering of
// the very messages the stream carries; so both protocols share parsing,
// limits and error messages. Results come in one message (a stream that
// ends after its first message is what Tempo sends for a small search
// too), except search results larger than maxMessage: Grafana adds up the
// traces of every search message, and its gRPC client refuses messages
// over 4 MiB, so those are sent in parts. Metrics messages each replace
// the last in Grafana, so they stay whole.
type streamingQuerier struct {
	tempopb.UnimplementedStreamingQuerierServer
	http       http.Handler
	maxMessage int
}

// searchMessageBytes keeps search messages under gRPC's default 4 MiB
// receive limit with room for the metrics.
const searchMessageBytes = 3 << 20

// NewGRPCServer returns a gRPC server offering Tempo's StreamingQuerier
// over the same query engine as NewHandler.
func NewGRPCServer(h http.Handler, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	tempopb.RegisterStreamingQuerierServer(s, &streamingQuerier{http: h, maxMessage: searchMessageBytes})
	return s
}

// Mux serves gRPC requests (HTTP/2 with content-type application/grpc)
// with g and everything else with h, so one port speaks both as Tempo's
// does. The listener must accept HTTP/2 without TLS (h2c) for gRPC clients
// to reach it; see server.httpService.
func Mux(h http.Handler, g *grpc.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *streamingQuerier) Search(req *tempopb.SearchRequest, stream grpc.ServerStreamingServer[tempopb.SearchResponse]) error {
	v := url.Values{}
	setUint(v, "limit", req.GetLimit())
	setUint(v, "spss", req.GetSpansPerSpanSet())
	setUint(v, "start", req.GetStart())
	setUint(v, "end", req.GetEnd())
	if ms := req.GetMinDurationMs(); ms > 0 {
		v.Set("minDuration", strconv.FormatUint(uint64(ms), 10)+"ms")
	}
	if ms := req.GetMaxDurationMs(); ms > 0 {
		v.Set("maxDuration", strconv.FormatUint(uint64(ms), 10)+"ms")
	}
	if q := req.GetQuery(); q != "" {
		v.Set("q", q)
	} else if len(req.GetTags()) > 0 {
		var tags []string
		for k, val := range req.GetTags() {
			tags = append(tags, k+"="+strconv.Quote(val))
		}
		v.Set("tags", strings.Join(tags, " "))
	}
	var res tempopb.SearchResponse
	if err := decode(stream.Context(), s.http, "/api/search", v, &res); err != nil {
		return err
	}
	return sendSearch(stream, &res, s.maxMessage)
}

// sendSearch sends the traces in messages of at most max bytes (at least
// one trace each), every message with the metrics.
func sendSearch(stream grpc.ServerStreamingServer[tempopb.SearchResponse], res *tempopb.SearchResponse, max int) error {
	if proto.Size(res) <= max {
		return stream.Send(res)
	}
	part := &tempopb.SearchResponse{Metrics: res.Metrics}
	size := proto.Size(res.Metrics)
	for _, tr := range res.Traces {
		n := proto.Size(tr) + 8 // field tag and length prefix
		if len(part.Traces) > 0 && size+n > max {
			if err := stream.Send(part); err != nil {
				return err
			}
			part, size = &tempopb.SearchResponse{Metrics: res.Metrics}, proto.Size(res.Metrics)
		}
		part.Traces = append(part.Traces, tr)
		size += n
	}
	return stream.Send(part)
}

func (s *streamingQuerier) SearchTags(req *tempopb.SearchTagsRequest, stream grpc.ServerStreamingServer[tempopb.SearchTagsResponse]) error {
	return answer(stream, s.http, "/api/search/tags", tagsQuery(req))
}

func (s *streamingQuerier) SearchTagsV2(req *tempopb.SearchTagsRequest, stream grpc.ServerStreamingServer[tempopb.SearchTagsV2Response]) error {
	return answer(stream, s.http, "/api/v2/search/tags", tagsQuery(req))
}

func (s *streamingQuerier) SearchTagValues(req *tempopb.SearchTagValuesRequest, stream grpc.ServerStreamingServer[tempopb.SearchTagValuesResponse]) error {
	path, v, err := tagValuesQuery("/api/search/tag/", req)
	if err != nil {
		return err
	}
	return answer(stream, s.http, path, v)
}

func (s *streamingQuerier) SearchTagValuesV2(req *tempopb.SearchTagValuesRequest, stream grpc.ServerStreamingServer[tempopb.SearchTagValuesV2Response]) error {
	path, v, err := tagValuesQuery("/api/v2/search/tag/", req)
	if err != nil {
		return err
	}
	return answer(stream, s.http, path, v)
}

func (s *streamingQuerier) MetricsQueryRange(req *tempopb.QueryRangeRequest, stream grpc.ServerStreamingServer[tempopb.QueryRangeResponse]) error {
	v := metricsQuery(req.GetQuery(), req.GetStart(), req.GetEnd())
	if st := req.GetStep(); st > 0 {
		v.Set("step", strconv.FormatUint(st, 10)+"ns")
	}
	return answer(stream, s.http, "/api/metrics/query_range", v)
}

func (s *streamingQuerier) MetricsQueryInstant(req *tempopb.QueryInstantRequest, stream grpc.ServerStreamingServer[tempopb.QueryInstantResponse]) error {
	v := metricsQuery(req.GetQuery(), req.GetStart(), req.GetEnd())
	return answer(stream, s.http, "/api/metrics/query", v)
}

func setUint[T uint32 | uint64](v url.Values, key string, n T) {
	if n > 0 {
		v.Set(key, strconv.FormatUint(uint64(n), 10))
	}
}

func tagsQuery(req *tempopb.SearchTagsRequest) url.Values {
	v := url.Values{}
	if req.GetScope() != "" {
		v.Set("scope", req.GetScope())
	}
	if req.GetQuery() != "" {
		v.Set("q", req.GetQuery())
	}
	setUint(v, "start", req.GetStart())
	setUint(v, "end", req.GetEnd())
	setUint(v, "limit", req.GetMaxTagsPerScope())
	return v
}

func tagValuesQuery(prefix string, req *tempopb.SearchTagValuesRequest) (string, url.Values, error) {
	if req.GetTagName() == "" {
		return "", nil, status.Error(codes.InvalidArgument, "tagName is required")
	}
	v := url.Values{}
	if req.GetQuery() != "" {
		v.Set("q", req.GetQuery())
	}
	setUint(v, "start", req.GetStart())
	setUint(v, "end", req.GetEnd())
	setUint(v, "limit", req.GetMaxTagValues())
	return prefix + req.GetTagName() + "/values", v, nil
}

// metricsQuery sets start and end as unix nanoseconds, which the HTTP
// parser tells from seconds by their number of digits.
func metricsQuery(q string, start, end uint64) url.Values {
	v := url.Values{"q": {q}}
	setUint(v, "start", start)
	setUint(v, "end", end)
	return v
}

// answer runs the HTTP query and sends its result as the stream's one
// message; HTTP failures become the matching gRPC status.
func answer[T any, PT interface {
	*T
	proto.Message
}](stream grpc.ServerStreamingServer[T], h http.Handler, path string, v url.Values) error {
	into := PT(new(T))
	if err := decode(stream.Context(), h, path, v, into); err != nil {
		return err
	}
	return stream.Send(into)
}

// decode runs the HTTP query and reads its JSON answer into the message.
func decode(ctx context.Context, h http.Handler, path string, v url.Values, into proto.Message) error {
	body, err := query(ctx, h, path, v)
	if err != nil {
		return err
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, into); err != nil {
		return status.Errorf(codes.Internal, "tempo grpc: decode %s answer: %v", path, err)
	}
	return nil
}

func query(ctx context.Context, h http.Handler, path string, v url.Values) ([]byte, error) {
	u := &url.URL{Path: path, RawQuery: v.Encode()}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad request for %s: %v", path, err)
	}
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	h.ServeHTTP(rec, r)
	if rec.code == http.StatusOK {
		return rec.body.Bytes(), nil
	}
	return nil, status.Error(grpcCode(rec.code), strings.TrimSpace(rec.body.String()))
}

func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case 499:
		return codes.Canceled
	}
	return codes.Internal
}

// recorder is the in-memory ResponseWriter the HTTP handler answers into.
type recorder struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.code = code }
