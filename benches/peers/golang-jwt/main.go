// Command golang-jwt verifies a KubeSphere ServiceAccount token (HS256) with github.com/golang-jwt/jwt/v4,
// the library and the call KubeSphere's token issuer uses (ParseWithClaims into its claims type), so
// ksiam-token can be compared with it on the same token.
//
//	golang-jwt -token token.json -count 5   # testing.Benchmark, one BENCH line per run
//	golang-jwt -version
//
// token.json is {"secret": "...", "token": "..."} as written by `ksiam-bench write`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// claims has the shape of KubeSphere's token.Claims (pkg/apiserver/authentication/token).
type claims struct {
	jwt.RegisteredClaims
	TokenType string              `json:"token_type"`
	Username  string              `json:"username"`
	Extra     map[string][]string `json:"extra,omitempty"`
	Scopes    []string            `json:"scopes,omitempty"`
}

func verify(token string, secret []byte) (*claims, error) {
	c := &claims{}
	_, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (interface{}, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected signing method: %v", t.Header["alg"])
		}
		return secret, nil
	})
	if err != nil {
		return nil, err
	}
	if c.Username == "" {
		return nil, fmt.Errorf("token has no username")
	}
	return c, nil
}

func versions() string {
	parts := []string{runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/golang-jwt/jwt/v4" {
				parts = append(parts, d.Path+"@"+d.Version)
			}
		}
	}
	return strings.Join(parts, " ")
}

func main() {
	testing.Init()
	file := flag.String("token", "", "token.json ({secret, token})")
	count := flag.Int("count", 5, "runs of testing.Benchmark")
	benchtime := flag.Duration("benchtime", time.Second, "target time of one run")
	version := flag.Bool("version", false, "print the versions of Go and golang-jwt")
	flag.Parse()
	if *version {
		fmt.Println(versions())
		return
	}
	if err := run(*file, *count, *benchtime); err != nil {
		fmt.Fprintln(os.Stderr, "golang-jwt:", err)
		os.Exit(1)
	}
}

func run(file string, count int, benchtime time.Duration) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var in struct {
		Secret string `json:"secret"`
		Token  string `json:"token"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	secret := []byte(in.Secret)
	c, err := verify(in.Token, secret)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "golang-jwt: token of %s verifies\n", c.Username)
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		return err
	}
	for i := 0; i < count; i++ {
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for j := 0; j < b.N; j++ {
				if _, err := verify(in.Token, secret); err != nil {
					b.Fatal(err)
				}
			}
		})
		fmt.Printf("BENCH peer=golang-jwt case=verify_hs256 run=%d n=%d ns_per_op=%.1f allocs_per_op=%d bytes_per_op=%d\n",
			i, res.N, float64(res.T.Nanoseconds())/float64(res.N), res.AllocsPerOp(), res.AllocedBytesPerOp())
	}
	return nil
}
