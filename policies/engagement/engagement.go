// Package engagement holds the engagement policies: Rego evaluated by the
// decide target on every message, with their opa-test unit tests beside
// them. The Go side only embeds the sources, so the decide target runs
// exactly the files those tests (and `platformctl policy test`) cover.
package engagement

import (
	"embed"
	"io/fs"
	"strings"
)

//go:embed *.rego
var files embed.FS

// ContactQuery is the rule the contact policy's caller evaluates.
const ContactQuery = "data.whisper.engagement.contact.decision"

// Modules returns the policy sources, not the tests, keyed by file name.
func Modules() map[string]string {
	modules := map[string]string{}
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err) // an embed.FS root always reads
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.rego") {
			continue
		}
		src, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		modules[e.Name()] = string(src)
	}
	return modules
}
