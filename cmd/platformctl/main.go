// Command platformctl gates and explains changes to the Kubernetes and Argo
// CD configuration of Whisper: render, check, policy check/test and diff.
//
// It is the one place that may hand the services' metric catalogue to the
// gitops packages (internal/ must not import services/), so that `check`
// holds dashboards and alert rules to the metrics the code registers.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/whisperhq/whisper/internal/gitops/cli"
	"github.com/whisperhq/whisper/services/targets"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, cli.WithMetricCatalogue(targets.MetricCatalogue))
	stop()
	os.Exit(code)
}
