package engine

import (
	"github.com/tracedx/tracedx/internal/model"
)

// spanRow is one span as a Parquet row. Rows of a block are sorted by
// (trace id, start), which is what makes it small:
//   - trace id and trace start are not stored per row at all: the block
//     index has them once per trace;
//   - parent_idx points at the parent's position inside the trace's rows
//     instead of repeating its 8 random bytes;
//   - start_off is the offset from the trace start, a short number;
//   - parent_idx and start_off are byte-stream-split: the values' high
//     bytes, mostly zero, end up side by side, which zstd shrinks ~10 %
//     (parent_idx ~50 %) more than plain values (blocks written before,
//     plain, read the same);
//   - duration is delta-binary-packed and not compressed: span-filter
//     searches read it at rows spread over every page, so every page of
//     it is decoded; bit-unpacking is ~4x cheaper than zstd plus the
//     byte-stream split, for 3 % more bytes (3.64 against 3.53 per span).
//     Blocks written before, byte-stream-split or plain, read the same;
//   - service, name, scope, resource and the dedicated attribute columns
//     are dictionary encoded, and zstd squeezes what is left; a column
//     chunk whose dictionary outgrows dictMaxBytes (values that hardly
//     repeat: paths with ids, client addresses) goes on in plain pages.
type spanRow struct {
	// TraceID and TraceStart are not stored in the Parquet file: the block
	// index holds each trace's id and start once, and readers fill them in.
	TraceID    [16]byte `parquet:"-"`
	SpanID     [8]byte  `parquet:"span_id"`
	ParentIdx  int32    `parquet:"parent_idx,split"`   // 0: no parent; k: the (k-1)th row of this trace in this block
	ParentID   []byte   `parquet:"parent_id,optional"` // set only when the parent is not among the trace's rows here
	TraceStart int64    `parquet:"-"`                  // earliest start of the trace's rows in this block (index start)
	StartOff   int64    `parquet:"start_off,split"`
	Duration   int64    `parquet:"duration,delta,uncompressed"` // end-start, modulo 2^64
	Service    string   `parquet:"service,dict"`
	Name       string   `parquet:"name,dict"`
	Kind       int32    `parquet:"kind,dict"`
	Status     int32    `parquet:"status,dict"`
	StatusMsg  string   `parquet:"status_msg,optional,dict"`
	TraceState string   `parquet:"trace_state,optional,dict"`
	Flags      int32    `parquet:"flags,dict"`
	ScopeName  string   `parquet:"scope_name,dict"`
	ScopeVer   string   `parquet:"scope_version,dict"`
	Resource   []byte   `parquet:"resource,dict"`    // encoded resource attributes
	Attrs      []byte   `parquet:"attrs,optional"`   // encoded attribute order + non-dedicated attributes
	Events     []byte   `parquet:"events,optional"`  // encoded events
	Links      []byte   `parquet:"links,optional"`   // encoded links
	Dropped    []byte   `parquet:"dropped,optional"` // three uvarints when any drop count is non-zero
	// Spill is set when an attribute with a dedicated key sits in the attrs
	// blob instead (wrong type, zero value or duplicate key); column scans
	// must then read the blob to see it.
	Spill bool `parquet:"spill"`

	// Dedicated attribute columns: well-known semantic-convention keys get
	// their own dictionary-encoded column so that repeated values (methods,
	// routes, statement shapes) cost a few bits and filters can read one
	// column. A value lands here only when its type matches and it is not
	// the zero value, so "absent" and "zero" are never confused.
	HTTPReqMethod   string `parquet:"a_http_request_method,optional,dict"`
	HTTPMethod      string `parquet:"a_http_method,optional,dict"`
	HTTPRoute       string `parquet:"a_http_route,optional,dict"`
	HTTPRespStatus  int64  `parquet:"a_http_response_status_code,optional,dict"`
	HTTPStatus      int64  `parquet:"a_http_status_code,optional,dict"`
	URLFull         string `parquet:"a_url_full,optional,dict"`
	HTTPURL         string `parquet:"a_http_url,optional,dict"`
	URLPath         string `parquet:"a_url_path,optional,dict"`
	HTTPTarget      string `parquet:"a_http_target,optional,dict"`
	ServerAddress   string `parquet:"a_server_address,optional,dict"`
	ServerPort      int64  `parquet:"a_server_port,optional,dict"`
	NetPeerName     string `parquet:"a_net_peer_name,optional,dict"`
	PeerService     string `parquet:"a_peer_service,optional,dict"`
	DBSystem        string `parquet:"a_db_system,optional,dict"`
	DBSystemName    string `parquet:"a_db_system_name,optional,dict"`
	DBStatement     string `parquet:"a_db_statement,optional,dict"`
	DBQueryText     string `parquet:"a_db_query_text,optional,dict"`
	DBName          string `parquet:"a_db_name,optional,dict"`
	DBNamespace     string `parquet:"a_db_namespace,optional,dict"`
	DBOperation     string `parquet:"a_db_operation,optional,dict"`
	DBOperationName string `parquet:"a_db_operation_name,optional,dict"`
	RPCSystem       string `parquet:"a_rpc_system,optional,dict"`
	RPCService      string `parquet:"a_rpc_service,optional,dict"`
	RPCMethod       string `parquet:"a_rpc_method,optional,dict"`
	MsgSystem       string `parquet:"a_messaging_system,optional,dict"`
	MsgDestination  string `parquet:"a_messaging_destination_name,optional,dict"`
	MsgOperation    string `parquet:"a_messaging_operation,optional,dict"`
	ErrorType       string `parquet:"a_error_type,optional,dict"`
	NetPeerPort     int64  `parquet:"a_net_peer_port,optional,dict"`
	URLScheme       string `parquet:"a_url_scheme,optional,dict"`
	NetProtoVersion string `parquet:"a_network_protocol_version,optional,dict"`
	UserAgent       string `parquet:"a_user_agent_original,optional,dict"`
	ClientAddress   string `parquet:"a_client_address,optional,dict"`
	NetPeerAddress  string `parquet:"a_network_peer_address,optional,dict"`
	ThreadID        int64  `parquet:"a_thread_id,optional,dict"`
	DBUser          string `parquet:"a_db_user,optional,dict"`
	DBSQLTable      string `parquet:"a_db_sql_table,optional,dict"`
	NetTransport    string `parquet:"a_network_transport,optional,dict"`

	// SpillKeys says which keys spilled (see spillBit), so that a column
	// scan reads the blob only for rows where the key it looks for may be
	// there. Blocks written before it existed lack the column (read as 0):
	// there Spill alone says "some key".
	SpillKeys int64 `parquet:"spill_keys,optional"`
}

// spillBit is the SpillKeys bit of dedicated column j; the last bit
// stands for every column from 63 on.
func spillBit(j int) int64 { return 1 << min(j, 63) }

type dedicatedCol struct {
	key string
	str func(r *spanRow) *string // nil for int columns
	num func(r *spanRow) *int64
}

func ds(key string, f func(r *spanRow) *string) dedicatedCol { return dedicatedCol{key: key, str: f} }
func di(key string, f func(r *spanRow) *int64) dedicatedCol  { return dedicatedCol{key: key, num: f} }

// dedicated lists the dedicated columns; the position in this list is
// persisted in the attrs blob, so only append to it.
var dedicated = []dedicatedCol{
	ds("http.request.method", func(r *spanRow) *string { return &r.HTTPReqMethod }),
	ds("http.method", func(r *spanRow) *string { return &r.HTTPMethod }),
	ds("http.route", func(r *spanRow) *string { return &r.HTTPRoute }),
	di("http.response.status_code", func(r *spanRow) *int64 { return &r.HTTPRespStatus }),
	di("http.status_code", func(r *spanRow) *int64 { return &r.HTTPStatus }),
	ds("url.full", func(r *spanRow) *string { return &r.URLFull }),
	ds("http.url", func(r *spanRow) *string { return &r.HTTPURL }),
	ds("url.path", func(r *spanRow) *string { return &r.URLPath }),
	ds("http.target", func(r *spanRow) *string { return &r.HTTPTarget }),
	ds("server.address", func(r *spanRow) *string { return &r.ServerAddress }),
	di("server.port", func(r *spanRow) *int64 { return &r.ServerPort }),
	ds("net.peer.name", func(r *spanRow) *string { return &r.NetPeerName }),
	ds("peer.service", func(r *spanRow) *string { return &r.PeerService }),
	ds("db.system", func(r *spanRow) *string { return &r.DBSystem }),
	ds("db.system.name", func(r *spanRow) *string { return &r.DBSystemName }),
	ds("db.statement", func(r *spanRow) *string { return &r.DBStatement }),
	ds("db.query.text", func(r *spanRow) *string { return &r.DBQueryText }),
	ds("db.name", func(r *spanRow) *string { return &r.DBName }),
	ds("db.namespace", func(r *spanRow) *string { return &r.DBNamespace }),
	ds("db.operation", func(r *spanRow) *string { return &r.DBOperation }),
	ds("db.operation.name", func(r *spanRow) *string { return &r.DBOperationName }),
	ds("rpc.system", func(r *spanRow) *string { return &r.RPCSystem }),
	ds("rpc.service", func(r *spanRow) *string { return &r.RPCService }),
	ds("rpc.method", func(r *spanRow) *string { return &r.RPCMethod }),
	ds("messaging.system", func(r *spanRow) *string { return &r.MsgSystem }),
	ds("messaging.destination.name", func(r *spanRow) *string { return &r.MsgDestination }),
	ds("messaging.operation", func(r *spanRow) *string { return &r.MsgOperation }),
	ds("error.type", func(r *spanRow) *string { return &r.ErrorType }),
	di("net.peer.port", func(r *spanRow) *int64 { return &r.NetPeerPort }),
	ds("url.scheme", func(r *spanRow) *string { return &r.URLScheme }),
	ds("network.protocol.version", func(r *spanRow) *string { return &r.NetProtoVersion }),
	ds("user_agent.original", func(r *spanRow) *string { return &r.UserAgent }),
	ds("client.address", func(r *spanRow) *string { return &r.ClientAddress }),
	ds("network.peer.address", func(r *spanRow) *string { return &r.NetPeerAddress }),
	di("thread.id", func(r *spanRow) *int64 { return &r.ThreadID }),
	ds("db.user", func(r *spanRow) *string { return &r.DBUser }),
	ds("db.sql.table", func(r *spanRow) *string { return &r.DBSQLTable }),
	ds("network.transport", func(r *spanRow) *string { return &r.NetTransport }),
}

var dedicatedByKey = func() map[string]int {
	m := make(map[string]int, len(dedicated))
	for i, d := range dedicated {
		m[d.key] = i
	}
	return m
}()

// Attribute blob entries start with a tag byte: attrGeneric is followed by
// key and value; tag t >= 1 means "dedicated column t-1 goes here", which
// keeps the original attribute order exact.
const attrGeneric = 0

// fromRow decodes the row-local fields of r into s. Parent and start are
// resolved by the caller from the trace context.
func fromRow(r *spanRow, s *model.Span) error {
	s.TraceID = r.TraceID
	s.SpanID = r.SpanID
	s.StartUnixNano = uint64(r.TraceStart) + uint64(r.StartOff)
	s.EndUnixNano = s.StartUnixNano + uint64(r.Duration)
	s.Service = r.Service
	s.Name = r.Name
	s.Kind = model.SpanKind(r.Kind)
	s.StatusCode = model.StatusCode(r.Status)
	s.StatusMessage = r.StatusMsg
	s.TraceState = r.TraceState
	s.Flags = uint32(r.Flags)
	s.ScopeName = r.ScopeName
	s.ScopeVersion = r.ScopeVer
	d := dec{b: r.Resource}
	s.Resource = decAttrs(&d)
	if len(r.Attrs) > 0 {
		d.reset(r.Attrs)
		n := d.count()
		s.Attrs = make(model.Attrs, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			tag := d.byte1()
			if tag == attrGeneric {
				k := d.str()
				s.Attrs = append(s.Attrs, model.Attr{Key: k, Value: decValue(&d)})
				continue
			}
			j := int(tag) - 1
			if j >= len(dedicated) {
				d.fail()
				break
			}
			c := &dedicated[j]
			if c.str != nil {
				s.Attrs = append(s.Attrs, model.Attr{Key: c.key, Value: model.Str(*c.str(r))})
			} else {
				s.Attrs = append(s.Attrs, model.Attr{Key: c.key, Value: model.Int(*c.num(r))})
			}
		}
	}
	if len(r.Events) > 0 {
		d.reset(r.Events)
		s.Events = decEvents(&d, s.StartUnixNano)
	}
	if len(r.Links) > 0 {
		d.reset(r.Links)
		s.Links = decLinks(&d)
	}
	if len(r.Dropped) > 0 {
		d.reset(r.Dropped)
		s.DroppedAttributesCount = uint32(d.uvarint())
		s.DroppedEventsCount = uint32(d.uvarint())
		s.DroppedLinksCount = uint32(d.uvarint())
	}
	if d.err != nil {
		return d.err
	}
	return nil
}
