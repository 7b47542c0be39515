// Package rpctest holds what tests need to call Whisper's APIs as real
// clients do: credentials on every call, and cleartext HTTP/2 for gRPC.
package rpctest

import (
	"context"
	"encoding/base64"
	"net/http"

	"connectrpc.com/connect"
)

// BasicAuth sends key as the Basic-auth user name, as ingestion expects a
// write key.
func BasicAuth(key string) connect.ClientOption {
	return header("Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")))
}

// Bearer sends an API or admin token, as the management APIs expect.
func Bearer(token string) connect.ClientOption {
	return header("Bearer " + token)
}

func header(authorization string) connect.ClientOption {
	return connect.WithInterceptors(authHeader(authorization))
}

// authHeader sets Authorization on unary and streaming calls alike.
type authHeader string

func (a authHeader) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", string(a))
		return next(ctx, req)
	}
}

func (a authHeader) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", string(a))
		return conn
	}
}

func (a authHeader) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// H2CClient speaks cleartext HTTP/2, as gRPC clients do.
func H2CClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}}
}
