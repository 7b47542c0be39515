// Package config parses command-line flags with WHISPER_* environment
// fallbacks, so every setting can come from a flag in development and from
// the environment in a Kubernetes Deployment.
//
// The environment name of a flag is WHISPER_ followed by the flag name in
// upper case with dashes as underscores: --http-addr is WHISPER_HTTP_ADDR.
// A flag given on the command line wins over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// EnvName is the environment variable that backs the flag name.
func EnvName(flagName string) string {
	return "WHISPER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable, looked up with lookupEnv (os.LookupEnv
// outside tests). A bad value names both the flag and the variable.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := EnvName(f.Name)
		v, ok := lookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q for %s (flag --%s): %w", v, name, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// StringList is a flag.Value for a comma-separated list, such as broker
// addresses or targets.
type StringList []string

func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set replaces the list: a repeated flag does not append, so the
// environment and the command line mean the same thing.
func (l *StringList) Set(s string) error {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	*l = out
	return nil
}
