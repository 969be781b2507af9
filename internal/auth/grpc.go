package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authorize checks the call's "authorization: Bearer …" metadata.
func (t *Tokens) authorize(ctx context.Context, scope Scope) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	for _, v := range md.Get("authorization") {
		if scheme, rest, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(rest)
		}
	}
	id, ok := t.Check(tok)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "a valid bearer token is required (metadata authorization: Bearer <token>)")
	}
	if !id.Has(scope) {
		return nil, status.Errorf(codes.PermissionDenied, "the token lacks the %s scope", scope)
	}
	return WithIdentity(ctx, id), nil
}

// UnaryInterceptor admits unary calls whose token holds scope.
func (t *Tokens) UnaryInterceptor(scope Scope) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := t.authorize(ctx, scope)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor admits streams whose token holds scope.
func (t *Tokens) StreamInterceptor(scope Scope) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := t.authorize(ss.Context(), scope)
		if err != nil {
			return err
		}
		return h(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
