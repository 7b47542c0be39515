// Package kubectli18n keeps kubectl's message catalogue from loading while
// the program starts.
//
// Argo CD's API types (which the strict decoder needs) import
// gitops-engine, which imports kubectl's commands, whose package variables
// call i18n.T: the first call builds a zip archive of the translations and
// compresses it, 20 ms of every platformctl start-up for help text that
// platformctl never prints. kubectl offers SetLoadTranslationsFunc for
// programs that bring their own catalogue; ours is empty, so i18n.T returns
// its English argument unchanged.
//
// The hook must run before the first i18n.T call. Go initialises a package
// once its imports are, picking the first such package in import-path order
// (the Go 1.21 rule), and this package imports only i18n and sorts before
// every k8s.io package, so it runs right after i18n itself.
package kubectli18n

import "k8s.io/kubectl/pkg/util/i18n"

func init() {
	// The error only says that translations were loaded already, too late
	// to save anything; the messages are right either way.
	_ = i18n.SetLoadTranslationsFunc(func() error { return nil })
}
