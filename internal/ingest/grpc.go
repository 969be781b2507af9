package ingest

import (
	"context"
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip decompression
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tracedx/tracedx/internal/priority"
)

const (
	grpcStreamWindow = 4 << 20
	grpcConnWindow   = 16 << 20
)

// grpcStreamWorkers is how many goroutines serve streams in turn
// (grpc.NumStreamWorkers); a stream that finds none idle gets a goroutine
// of its own, as every stream did without them. A fresh goroutine grew its
// stack two or three times while receiving and decoding its request
// (copystack was 7 % of the CPU with 4-span requests, and weighed most on
// cluster nodes, which get more, smaller requests per span); a worker keeps
// its grown stack for the next stream. An export request waits for its WAL
// sync, so a node has about as many in flight as its senders keep open (a
// Collector's exporter: 10 by default).
func grpcStreamWorkers() uint32 { return uint32(max(32, 4*priority.CPUs())) }

func (s *Server) newGRPCServer() *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(s.cfg.MaxRequestBytes)),
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxConcurrentRequests)),
		// Export requests are a few hundred KB. With gRPC's default 64 KB
		// windows a client waits for a window update from the server every
		// 64 KB, and on a busy server (one core shared with storage work)
		// each update waits for a scheduling turn, so requests spent most
		// of their time half-received. Static windows let a client send a
		// whole request at once; memory stays bounded by the connection
		// window and MaxConcurrentRequests.
		grpc.InitialWindowSize(grpcStreamWindow),
		grpc.InitialConnWindowSize(grpcConnWindow),
		grpc.NumStreamWorkers(grpcStreamWorkers()),
		grpc.ForceServerCodecV2(passthroughCodec{delegate: encoding.GetCodecV2("proto")}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	g := grpc.NewServer(append(opts, s.cfg.GRPCOptions...)...)
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Export", Handler: s.rawHandler("/opentelemetry.proto.collector.trace.v1.TraceService/Export", tracesSignal)}},
		Metadata:    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
	}, s)
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.logs.v1.LogsService",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Export", Handler: s.rawHandler("/opentelemetry.proto.collector.logs.v1.LogsService/Export", logsSignal)}},
		Metadata:    "opentelemetry/proto/collector/logs/v1/logs_service.proto",
	}, s)
	return g
}

// grpcStatus maps a pipeline error to the OTLP gRPC status: retryable codes
// carry RetryInfo so exporters back off for RetryAfter.
func (s *Server) grpcStatus(err error) error {
	var re *requestError
	if !errors.As(err, &re) {
		return status.Error(codes.Internal, err.Error())
	}
	var code codes.Code
	switch re.kind {
	case kindLimited:
		code = codes.ResourceExhausted
	case kindOverloaded:
		code = codes.Unavailable
	case kindInternal:
		return status.Error(codes.Internal, re.msg)
	default:
		return status.Error(codes.InvalidArgument, re.msg)
	}
	st, derr := status.New(code, re.msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(s.cfg.RetryAfter)})
	if derr != nil {
		return status.Error(code, re.msg)
	}
	return st.Err()
}

// The OTLP services are registered by hand, with handlers that receive
// the request's bytes instead of pdata's generated registration, because
// the bytes must be checked before pdata decodes them (its decoder
// recurses without limit on nested attribute values) and because gRPC
// answers a decoding failure inside its codec with INTERNAL, where OTLP
// wants INVALID_ARGUMENT. Decoding is the same as on OTLP/HTTP.

// rawMessage is an encoded response.
type rawMessage []byte

// passthroughCodec passes requests (pooledRequest) and responses
// (rawMessage) through as bytes and leaves any other type to the proto
// codec.
type passthroughCodec struct{ delegate encoding.CodecV2 }

func (c passthroughCodec) Name() string { return c.delegate.Name() }

func (c passthroughCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	}
	return c.delegate.Marshal(v)
}

func (c passthroughCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*pooledRequest); ok {
		m.buf = data.MaterializeToBuffer(requestPool)
		return nil
	}
	return c.delegate.Unmarshal(data, v)
}

// pooledRequest holds an export request's bytes in a buffer of gRPC's pool
// until the handler is done with them. Requests are a few hundred KB and
// arrive in many frames; a fresh slice for each (Materialize) was a tenth
// of all the bytes the server allocated at full rate. Nothing decoded from
// a request points into its bytes (the decoders copy strings and bytes),
// so the buffer can go back to the pool when the handler returns.
type pooledRequest struct{ buf mem.Buffer }

func (r *pooledRequest) bytes() []byte {
	if r.buf == nil {
		return nil
	}
	return r.buf.ReadOnlyData()
}

func (r *pooledRequest) free() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
}

type rawExport func(ctx context.Context, req []byte) ([]byte, error)

func (s *Server) rawHandler(fullMethod string, sig otlpSignal) grpc.MethodHandler {
	export := s.grpcExport(sig)
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		// Admission runs before the message is read (gRPC reads it when
		// dec is called), so a refused request costs no decoding. It is
		// not an InTapHandle: gRPC-go leaves the deadline timer of a
		// stream refused there running until the deadline, and when an
		// overload's refused requests share a deadline (a load generator's
		// whole run) their timers fire together: tens of thousands of
		// goroutines at once, far above the memory limit.
		if s.cfg.Admit != nil {
			if err := s.cfg.Admit(); err != nil {
				rerr := &requestError{kind: kindOverloaded, msg: err.Error()}
				s.finish(protoGRPC, sig.name, rerr, 0)
				return nil, s.grpcStatus(rerr)
			}
		}
		var req pooledRequest
		if err := dec(&req); err != nil {
			return nil, err
		}
		defer req.free()
		call := func(ctx context.Context, r any) (any, error) {
			resp, err := export(ctx, r.(*pooledRequest).bytes())
			if err != nil {
				return nil, err
			}
			out := rawMessage(resp)
			return &out, nil
		}
		// Interceptors (authentication) run here: a hand-registered
		// service is only protected when its handler calls them.
		if interceptor == nil {
			return call(ctx, &req)
		}
		return interceptor(ctx, &req, &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}, call)
	}
}

// grpcExport answers one export request of a signal over gRPC.
func (s *Server) grpcExport(sig otlpSignal) rawExport {
	return func(ctx context.Context, data []byte) ([]byte, error) {
		var res exportResult
		release, err := s.acquire(ctx)
		if err == nil {
			res, err = sig.export(s, ctx, protoGRPC, formatProto, data)
			release()
		}
		s.finish(protoGRPC, sig.name, err, res.rejected)
		if err != nil {
			return nil, s.grpcStatus(err)
		}
		if res.rejected == 0 {
			// Full success leaves partial_success unset: the empty
			// message, without building one per request.
			return []byte{}, nil
		}
		return sig.response(res).MarshalProto()
	}
}

// exportTraces decodes and stores one trace export request of either
// OTLP protocol; the caller holds a concurrency slot.
func (s *Server) exportTraces(ctx context.Context, proto string, format wireFormat, data []byte) (exportResult, error) {
	if format == formatProto {
		if res, split, err := s.exportSplit(ctx, proto, data); split {
			return res, err
		}
		// The direct decoder takes what pdata would decode without
		// complaint and, unlike pdata, needs no nesting check first (it
		// refuses what the check refuses). Anything else, errors and
		// partial successes included, is answered below as before.
		if ctx, batch, err := s.decodeTracesProto(ctx, data); err == nil {
			// The sink has encoded the spans when consumeSpans returns.
			defer batch.Release()
			// A peer may send the parts of several requests as one.
			if err := s.checkCount(len(batch.Spans), "spans"); err != nil && !s.forwarded(ctx) {
				return exportResult{}, err
			}
			s.observeLimits(batch.Stats)
			return s.consumeSpans(ctx, proto, batch.Spans, &rejections{})
		}
	}
	td, rep, err := decodeTraces(format, data)
	if err != nil {
		return exportResult{}, err
	}
	return s.consumeTraces(ctx, proto, td, rep)
}

// exportLogs is exportTraces for logs.
func (s *Server) exportLogs(ctx context.Context, proto string, format wireFormat, data []byte) (exportResult, error) {
	ld, rep, err := decodeLogs(format, data)
	if err != nil {
		return exportResult{}, err
	}
	return s.consumeLogs(ctx, proto, ld, rep)
}
