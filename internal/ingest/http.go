package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tracedx/tracedx/internal/freelist"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/zipkin"
)

type wireFormat uint8

const (
	formatProto wireFormat = iota + 1
	formatJSON
)

const (
	ctProto = "application/x-protobuf"
	ctJSON  = "application/json"
)

// OTLPHTTPHandler serves POST /v1/traces and /v1/logs. The coordinator may
// mount it on its own mux instead of using HTTPAddr.
func (s *Server) OTLPHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) { s.handleOTLP(w, r, tracesSignal) })
	mux.HandleFunc("/v1/logs", func(w http.ResponseWriter, r *http.Request) { s.handleOTLP(w, r, logsSignal) })
	return mux
}

// ZipkinHandler serves POST /api/v2/spans.
func (s *Server) ZipkinHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v2/spans", s.handleZipkin)
	return mux
}

func parseOTLPContentType(ct string) (wireFormat, error) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil && ct != "" {
		return 0, badInput(kindUnsupported, reasonContentType, "unparsable Content-Type %q: use %s or %s", model.Clip(ct, 80), ctProto, ctJSON)
	}
	switch mt {
	case ctProto, "application/protobuf":
		return formatProto, nil
	case ctJSON:
		return formatJSON, nil
	}
	return 0, badInput(kindUnsupported, reasonContentType, "unsupported Content-Type %q: use %s or %s", model.Clip(ct, 80), ctProto, ctJSON)
}

func (s *Server) handleOTLP(w http.ResponseWriter, r *http.Request, sig otlpSignal) {
	format, ferr := parseOTLPContentType(r.Header.Get("Content-Type"))
	var err error
	rejected := 0
	defer func() { s.finish(protoHTTP, sig.name, err, rejected) }()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		err = badInput(kindMethod, reasonMethod, "method %s not allowed: OTLP/HTTP export uses POST", r.Method)
		s.writeOTLPError(w, format, err)
		return
	}
	if ferr != nil {
		err = ferr
		s.writeOTLPError(w, 0, err)
		return
	}
	release, aerr := s.acquire(r.Context())
	if aerr != nil {
		err = aerr
		drainBody(r)
		s.writeOTLPError(w, format, err)
		return
	}
	defer release()
	buf, rerr := s.readBody(w, r)
	if rerr != nil {
		err = rerr
		s.writeOTLPError(w, format, err)
		return
	}
	defer putBuf(buf)

	var res exportResult
	res, err = sig.export(s, r.Context(), protoHTTP, format, buf.Bytes())
	var body []byte
	if err == nil {
		rejected = res.rejected
		body, err = exportResponse(format, res.rejected, sig.response(res))
	}
	if err != nil {
		s.writeOTLPError(w, format, err)
		return
	}
	if format == formatJSON {
		w.Header().Set("Content-Type", ctJSON)
	} else {
		w.Header().Set("Content-Type", ctProto)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// exportResponse encodes an export response like the request. Full
// success leaves partial_success unset (OTLP spec): "{}" in JSON, no bytes
// in protobuf.
func exportResponse(format wireFormat, rejected int, resp encodedResponse) ([]byte, error) {
	switch {
	case rejected == 0 && format == formatJSON:
		return []byte("{}"), nil
	case rejected == 0:
		return nil, nil
	case format == formatJSON:
		return resp.MarshalJSON()
	}
	return resp.MarshalProto()
}

func decodeError(format wireFormat, err error) error {
	what := "protobuf"
	if format == formatJSON {
		what = "JSON"
	}
	return badInput(kindBadRequest, reasonDecode, "cannot decode OTLP %s request body: %v", what, err)
}

// httpStatus maps a pipeline error to an HTTP status and the equivalent
// gRPC code (the OTLP/HTTP error body is a google.rpc.Status).
func httpStatus(err error) (int, codes.Code, string) {
	var re *requestError
	if !errors.As(err, &re) {
		return http.StatusInternalServerError, codes.Internal, err.Error()
	}
	switch re.kind {
	case kindBadRequest:
		return http.StatusBadRequest, codes.InvalidArgument, re.msg
	case kindTooLarge:
		return http.StatusRequestEntityTooLarge, codes.InvalidArgument, re.msg
	case kindUnsupported:
		return http.StatusUnsupportedMediaType, codes.InvalidArgument, re.msg
	case kindMethod:
		return http.StatusMethodNotAllowed, codes.Unimplemented, re.msg
	case kindLimited:
		return http.StatusTooManyRequests, codes.ResourceExhausted, re.msg
	case kindOverloaded:
		return http.StatusServiceUnavailable, codes.Unavailable, re.msg
	}
	return http.StatusInternalServerError, codes.Internal, re.msg
}

func (s *Server) setRetryAfter(w http.ResponseWriter, code int) {
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		secs := int(s.cfg.RetryAfter.Seconds() + 0.999)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
}

// writeOTLPError answers with a google.rpc.Status encoded like the request
// (plain text when the request's encoding is unknown).
func (s *Server) writeOTLPError(w http.ResponseWriter, format wireFormat, err error) {
	code, grpcCode, msg := httpStatus(err)
	s.setRetryAfter(w, code)
	var body []byte
	switch format {
	case formatProto:
		body, _ = proto.Marshal(&spb.Status{Code: int32(grpcCode), Message: msg})
		w.Header().Set("Content-Type", ctProto)
	case formatJSON:
		body, _ = json.Marshal(struct {
			Code    int32  `json:"code"`
			Message string `json:"message"`
		}{int32(grpcCode), msg})
		w.Header().Set("Content-Type", ctJSON)
	default:
		body = []byte(msg + "\n")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// --- body reading --------------------------------------------------------

// Request bodies are read into pooled buffers: up to 8 of the usual size
// (a 500-span request is ~250 KB) wait in a freelist, which outlives
// collections; a sync.Pool empties at every other one, several times a
// second at the maximum rate, so most requests grew a new buffer. Larger
// ones, up to 4 MiB, go to the sync.Pool.
var (
	idleBufs = freelist.New[*bytes.Buffer](8)
	bufPool  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

const maxIdleBufBytes = 1 << 20

func getBuf() *bytes.Buffer {
	if b, ok := idleBufs.Get(); ok {
		return b
	}
	return bufPool.Get().(*bytes.Buffer)
}

// drainBytes is as much of an unread body as net/http reads to keep the
// connection (its maxPostHandlerReadBytes); past it, it closes instead.
const drainBytes = 256 << 10

var drainPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// drainBody reads and drops the body of a request refused unread, so that
// the connection stays open for the client's retry. net/http would do the
// same when the response is written, but in 8 KB reads: at the maximum
// rate over OTLP/HTTP, admission refuses up to a thousand ~250 KB requests
// a second, and their read system calls took 12 % of the server's CPU.
// Larger reads take a few calls per body.
func drainBody(r *http.Request) {
	if r.Body == nil || r.ContentLength == 0 || r.ContentLength > drainBytes {
		return // nothing to read, or more than net/http would read: it closes
	}
	bp := drainPool.Get().(*[]byte)
	defer drainPool.Put(bp)
	for n := 0; n <= drainBytes; {
		k, err := r.Body.Read(*bp)
		n += k
		if err != nil {
			return
		}
	}
}

// putBuf hands b back; nothing may use it, or its bytes, afterwards.
func putBuf(b *bytes.Buffer) {
	b.Reset()
	switch {
	case b.Cap() <= maxIdleBufBytes && idleBufs.Put(b):
	case b.Cap() <= 4<<20: // do not keep huge buffers alive in the pool
		bufPool.Put(b)
	}
}

var gzipPool sync.Pool

// zstdReader returns a streaming decoder of body from the server's pool.
// A new decoder allocated ~9 MB (its window and block buffers) for every
// 250 KB request, 13 times what the rest of the request cost
// (BenchmarkHTTPExport/zstd); a reset one allocates none of it again. The
// pool is the server's because its decoders carry the server's window
// limit.
func (s *Server) zstdReader(body io.Reader) (*zstd.Decoder, error) {
	if zr, ok := s.zstdPool.Get().(*zstd.Decoder); ok {
		if err := zr.Reset(body); err == nil {
			return zr, nil
		}
		zr.Close()
	}
	// One goroutine: the decoder runs in the request's, and a pooled
	// decoder the pool drops leaves no goroutine behind.
	return zstd.NewReader(body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(s.cfg.MaxRequestBytes)+1))
}

// putZstd returns a decoder to the pool without its reference to the
// request body.
func (s *Server) putZstd(zr *zstd.Decoder) {
	if err := zr.Reset(nil); err != nil {
		zr.Close()
		return
	}
	s.zstdPool.Put(zr)
}

// readBody reads the (decompressed) body into a pooled buffer, never more
// than MaxRequestBytes+1 bytes, so a 100 MB body or a zip bomb costs at
// most the limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, error) {
	limit := s.cfg.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, s.tooLarge(r.ContentLength)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	var src io.Reader = body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(body)
		} else {
			err = zr.Reset(body)
		}
		if err != nil {
			return nil, s.readError(err, "gzip")
		}
		defer gzipPool.Put(zr)
		src = zr
	case "zstd":
		zr, err := s.zstdReader(body)
		if err != nil {
			return nil, s.readError(err, "zstd")
		}
		defer s.putZstd(zr)
		src = zr
	default:
		return nil, badInput(kindUnsupported, reasonEncoding, "unsupported Content-Encoding %q: use gzip, zstd or none", model.Clip(enc, 40))
	}
	buf := getBuf()
	if r.ContentLength > 0 && r.Header.Get("Content-Encoding") == "" {
		// ReadFrom wants MinRead bytes free before each read, the one
		// that finds the end included: room for the body alone made it
		// grow the buffer to twice its size (and copy the body) to learn
		// there was nothing more.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(src, limit+1))
	if err != nil {
		putBuf(buf)
		return nil, s.readError(err, r.Header.Get("Content-Encoding"))
	}
	if n > limit {
		putBuf(buf)
		return nil, s.tooLarge(n)
	}
	return buf, nil
}

func (s *Server) tooLarge(n int64) error {
	return badInput(kindTooLarge, reasonTooLarge, "request body exceeds the limit of %d bytes (got at least %d): send smaller batches", s.cfg.MaxRequestBytes, n)
}

func (s *Server) readError(err error, enc string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return s.tooLarge(mbe.Limit + 1)
	}
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return s.tooLarge(s.cfg.MaxRequestBytes + 1)
	}
	if enc != "" {
		return badInput(kindBadRequest, reasonDecode, "cannot decompress %s request body: %v", enc, err)
	}
	return badInput(kindBadRequest, reasonDecode, "cannot read request body: %v", err)
}

// --- Zipkin ----------------------------------------------------------------

func (s *Server) handleZipkin(w http.ResponseWriter, r *http.Request) {
	var err error
	rejected := 0
	defer func() { s.finish(protoZipkin, "traces", err, rejected) }()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		err = badInput(kindMethod, reasonMethod, "method %s not allowed: Zipkin spans are sent with POST", r.Method)
		s.writeTextError(w, err)
		return
	}
	// A browser may POST text/plain or form bodies to any origin without a
	// preflight; requiring JSON keeps a web page from injecting spans into
	// a local instance.
	if ct := r.Header.Get("Content-Type"); !isJSONContentType(ct) {
		err = badInput(kindUnsupported, reasonContentType, "unsupported Content-Type %q: only Zipkin v2 JSON (application/json) is accepted", model.Clip(ct, 80))
		s.writeTextError(w, err)
		return
	}
	release, aerr := s.acquire(r.Context())
	if aerr != nil {
		err = aerr
		s.writeTextError(w, err)
		return
	}
	defer release()
	buf, rerr := s.readBody(w, r)
	if rerr != nil {
		err = rerr
		s.writeTextError(w, err)
		return
	}
	defer putBuf(buf)
	spans, cerr := zipkin.ToModel(buf.Bytes())
	var rej rejections
	if cerr != nil {
		bad, partial := zipkin.IsInvalidSpans(cerr)
		if !partial {
			err = badInput(kindBadRequest, reasonDecode, "%v", cerr)
			s.writeTextError(w, err)
			return
		}
		for i := 0; i < bad.Rejected; i++ {
			rej.add(reasonInvalidID, bad.First[0].Error())
		}
	}
	s.observeLimits(otlpconv.LimitSpans(spans, s.cfg.limits()))
	var res exportResult
	res, err = s.consumeSpans(r.Context(), protoZipkin, spans, &rej)
	if err != nil {
		s.writeTextError(w, err)
		return
	}
	rejected = res.rejected
	note := res.msg
	if note != "" {
		// Zipkin has no partial-success body; say it in plain text.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusAccepted)
		_, _ = fmt.Fprintf(w, "accepted %d span(s); %s\n", res.accepted, note)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func isJSONContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == ctJSON
}

func (s *Server) writeTextError(w http.ResponseWriter, err error) {
	code, _, msg := httpStatus(err)
	s.setRetryAfter(w, code)
	http.Error(w, msg, code)
}
