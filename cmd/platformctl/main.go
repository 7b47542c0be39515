// Command platformctl gates and explains changes to the Kubernetes and Argo
// CD configuration of Whisper: render, check, policy check/test and diff.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/whisperhq/whisper/internal/gitops/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
