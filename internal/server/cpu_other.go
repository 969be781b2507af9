//go:build !linux

package server

import "time"

// Without per-thread CPU accounting the analysis pipeline never sheds on
// CPU share; its bounded queue still protects ingest.
func threadCPU() (time.Duration, bool)  { return 0, false }
func processCPU() (time.Duration, bool) { return 0, false }
