package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantList []string
		wantWait time.Duration
		wantErr  string
	}{
		{name: "defaults", wantAddr: ":8080", wantList: []string{"a"}, wantWait: time.Second},
		{name: "env fills", env: map[string]string{"WHISPER_HTTP_ADDR": ":9", "WHISPER_BROKERS": "x, y,", "WHISPER_WAIT": "2s"},
			wantAddr: ":9", wantList: []string{"x", "y"}, wantWait: 2 * time.Second},
		{name: "flag beats env", args: []string{"--http-addr=:7"}, env: map[string]string{"WHISPER_HTTP_ADDR": ":9"},
			wantAddr: ":7", wantList: []string{"a"}, wantWait: time.Second},
		{name: "bad env names flag and variable", env: map[string]string{"WHISPER_WAIT": "soon"},
			wantErr: `invalid value "soon" for WHISPER_WAIT (flag --wait)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("http-addr", ":8080", "")
			list := StringList{"a"}
			fs.Var(&list, "brokers", "")
			wait := fs.Duration("wait", time.Second, "")
			err := Parse(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *addr != tt.wantAddr || *wait != tt.wantWait {
				t.Errorf("got addr %q wait %v, want %q %v", *addr, *wait, tt.wantAddr, tt.wantWait)
			}
			if diff := cmp.Diff(tt.wantList, []string(list)); diff != "" {
				t.Errorf("brokers (-want +got):\n%s", diff)
			}
		})
	}
}
