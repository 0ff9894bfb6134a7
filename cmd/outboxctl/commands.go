package main

import (
	"encoding/json"
	"flag"
	"io"
)

// pageSize is the DeadLetters page and Replay chunk size.
const pageSize = 1000

func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
