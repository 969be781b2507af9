// Package tempopb holds the Go code generated from tempo.proto, the
// messages and service of Tempo's streaming query protocol. The generated
// files are committed so builds need no protoc.
package tempopb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative tempo.proto
