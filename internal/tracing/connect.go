package tracing

import (
	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/trace"
)

// Interceptors are the Connect interceptors that give every RPC a server
// span (otelconnect; its metrics are left out, the Prometheus RED
// interceptor has them). Put them first, so the span covers the others.
// With a nil tp there are none.
func Interceptors(tp trace.TracerProvider) []connect.Interceptor {
	if tp == nil {
		return nil
	}
	i, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(Propagator),
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		// Only creating metric instruments can fail, and the no-op meter
		// provider of WithoutMetrics never does.
		panic("otelconnect: " + err.Error())
	}
	return []connect.Interceptor{i}
}
