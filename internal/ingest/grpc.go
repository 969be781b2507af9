package ingest

import (
	"context"
	"errors"
	"reflect"
	"time"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip decompression
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	grpcStreamWindow = 4 << 20
	grpcConnWindow   = 16 << 20
)

func (s *Server) newGRPCServer() *grpc.Server {
	g := grpc.NewServer(
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
		grpc.ForceServerCodecV2(&idRepairCodec{delegate: encoding.GetCodecV2("proto"), s: s}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Admission runs before the message is read, so a refused request
		// costs no decoding.
		grpc.InTapHandle(s.admitStream),
	)
	ptraceotlp.RegisterGRPCServer(g, &grpcTraces{s: s})
	plogotlp.RegisterGRPCServer(g, &grpcLogs{s: s})
	return g
}

func (s *Server) admitStream(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(); err != nil {
			return nil, s.grpcStatus(&requestError{kind: kindOverloaded, msg: err.Error()})
		}
	}
	return ctx, nil
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

// idRepairCodec wraps the registered proto codec (pdata's). pdata rejects a
// whole request when one id has the wrong length; to reject only the
// offending spans (partial success), a failed trace request is re-read
// leniently, bad ids are blanked, and the repaired bytes decoded again, so
// the blanked spans are then rejected one by one by the pipeline. It also
// counts undecodable requests, which gRPC answers itself.
type idRepairCodec struct {
	delegate encoding.CodecV2
	s        *Server
}

var traceRequestType = reflect.TypeOf(ptraceotlp.NewExportRequest()).Field(0).Type // *internal.ExportTraceServiceRequest

func (c *idRepairCodec) Name() string { return c.delegate.Name() }

func (c *idRepairCodec) Marshal(v any) (mem.BufferSlice, error) { return c.delegate.Marshal(v) }

func (c *idRepairCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.delegate.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	if reflect.TypeOf(v) == traceRequestType {
		if fixed, n, ferr := repairTraceProto(data.Materialize()); ferr == nil && n > 0 {
			rv := reflect.ValueOf(v).Elem()
			rv.Set(reflect.Zero(rv.Type()))
			if err2 := c.delegate.Unmarshal(mem.BufferSlice{mem.SliceBuffer(fixed)}, v); err2 == nil {
				return nil
			}
		}
	}
	c.s.metrics.BadRequests.WithLabelValues(protoGRPC, reasonDecode).Inc()
	c.s.metrics.Requests.WithLabelValues(protoGRPC, "unknown", "bad_request").Inc()
	return err
}
