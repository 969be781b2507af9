// Package cluster holds the end-to-end test of a tracedx cluster on one
// S3 bucket (build tag minio; run by e2e/minio.sh).
package cluster
