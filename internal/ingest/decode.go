package ingest

import (
	"errors"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/otlpconv"
)

// decoder is the part of a pdata export request decoding needs.
type decoder interface {
	UnmarshalProto([]byte) error
	UnmarshalJSON([]byte) error
}

// signalCodec names what decodeOTLP needs to know about one signal.
type signalCodec struct {
	checkProto  func(data []byte, limit int) error
	repairProto func([]byte) ([]byte, repaired, error)
	repairJSON  func([]byte) ([]byte, repaired, error)
}

var (
	tracesCodec = signalCodec{otlpconv.CheckTracesProtoNesting, repairTraceProto, repairTraceJSON}
	logsCodec   = signalCodec{otlpconv.CheckLogsProtoNesting, repairLogsProto, repairLogsJSON}
)

// decodeOTLP decodes an OTLP export request of either encoding into req
// (a fresh request from newReq). It refuses requests nested too deep for
// the decoder before decoding them, and when pdata refuses the request
// only for ids of the wrong length, it decodes the request without the
// offending items and reports them for a partial success.
func decodeOTLP[R decoder](c signalCodec, format wireFormat, data []byte, newReq func() R) (R, repaired, error) {
	var check error
	if format == formatJSON {
		check = otlpconv.CheckJSONNesting(data)
	} else {
		check = c.checkProto(data, otlpconv.MaxNesting)
	}
	req := newReq()
	if check != nil {
		return req, repaired{}, checkError(format, check)
	}
	unmarshal := func(r R, b []byte) error {
		if format == formatJSON {
			return r.UnmarshalJSON(b)
		}
		return r.UnmarshalProto(b)
	}
	derr := unmarshal(req, data)
	if derr == nil {
		return req, repaired{}, nil
	}
	repair := c.repairProto
	if format == formatJSON {
		repair = c.repairJSON
	}
	fixed, rep, ferr := repair(data)
	if ferr != nil {
		return req, repaired{}, decodeError(format, derr)
	}
	req = newReq()
	if err := unmarshal(req, fixed); err != nil {
		return req, repaired{}, decodeError(format, errors.Join(derr, err))
	}
	return req, rep, nil
}

// checkError answers a request the scan before decoding refused: too
// deep, or (protobuf) unreadable.
func checkError(format wireFormat, err error) error {
	var ne *otlpconv.NestingError
	if errors.As(err, &ne) {
		return badInput(kindBadRequest, reasonTooDeep, "%v", err)
	}
	return decodeError(format, err)
}

func decodeTraces(format wireFormat, data []byte) (ptrace.Traces, repaired, error) {
	req, rep, err := decodeOTLP(tracesCodec, format, data, ptraceotlp.NewExportRequest)
	return req.Traces(), rep, err
}

func decodeLogs(format wireFormat, data []byte) (plog.Logs, repaired, error) {
	req, rep, err := decodeOTLP(logsCodec, format, data, plogotlp.NewExportRequest)
	return req.Logs(), rep, err
}
