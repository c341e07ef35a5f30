// Command k8s-requestinfo reads request targets the way kube-apiserver does, so the gateway's resolver
// (ksiam_rbac::Target) can be compared with Kubernetes' own code on the same requests.
//
//	k8s-requestinfo < requests.jsonl > readings.jsonl   # one JSON line out per JSON line in
//	k8s-requestinfo -version                             # versions of Go and of the peer modules
//
// Each input line is {"method": "GET", "target": "/api/v1/pods?watch=1"}: the request-target exactly as
// kube-apiserver receives it on the request line. For each, the peer
//   - parses the target as Go's net/http server does (url.ParseRequestURI: a '#' stays in RawQuery);
//   - runs k8s.io/apiserver's RequestInfoFactory (APIPrefixes api, apis; GrouplessAPIPrefixes api), which is
//     what kube-apiserver authorizes;
//   - reads the query with url.ParseQuery (values and error);
//   - decodes the query into metainternalversion.ListOptions with the ParameterCodec the list, watch and
//     deletecollection handlers use, and reports whether that succeeds and the selectors and watch flag it
//     yields.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/go-logr/logr"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/klog/v2"
)

type input struct {
	Method string `json:"method"`
	Target string `json:"target"`
}

// reading is what Kubernetes makes of one request. Field names are the Rust driver's (xtask/src/differential.rs).
type reading struct {
	// ParseError: url.ParseRequestURI refused the target (net/http answers 400).
	ParseError string `json:"parseError,omitempty"`
	// Path is req.URL.Path (decoded); RawQuery the query as the server keeps it (with any '#').
	Path     string `json:"path"`
	RawQuery string `json:"rawQuery"`

	// InfoError: NewRequestInfo failed (kube-apiserver answers 500).
	InfoError         string `json:"infoError,omitempty"`
	Verb              string `json:"verb"`
	APIPrefix         string `json:"apiPrefix"`
	APIGroup          string `json:"apiGroup"`
	APIVersion        string `json:"apiVersion"`
	Namespace         string `json:"namespace"`
	Resource          string `json:"resource"`
	Subresource       string `json:"subresource"`
	Name              string `json:"name"`
	IsResourceRequest bool   `json:"isResourceRequest"`
	InfoPath          string `json:"infoPath"`

	// Query is url.ParseQuery(RawQuery) (what req.URL.Query() returns), QueryError its error.
	Query      map[string][]string `json:"query"`
	QueryError string              `json:"queryError,omitempty"`

	// ListOptionsError: the ParameterCodec refused the query (list, watch and deletecollection answer 400).
	ListOptionsError string `json:"listOptionsError,omitempty"`
	// The decoded list options: the selectors as parsed and printed back by Kubernetes, and watch.
	LabelSelector string `json:"labelSelector"`
	FieldSelector string `json:"fieldSelector"`
	Watch         bool   `json:"watch"`
}

var factory = &request.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

func read(in input) reading {
	var out reading
	u, err := url.ParseRequestURI(in.Target)
	if err != nil {
		out.ParseError = err.Error()
		return out
	}
	out.Path, out.RawQuery = u.Path, u.RawQuery
	req := &http.Request{Method: in.Method, URL: u, RequestURI: in.Target, Header: http.Header{}}
	info, err := factory.NewRequestInfo(req)
	if err != nil {
		out.InfoError = err.Error()
	}
	if info != nil {
		out.Verb, out.APIPrefix, out.APIGroup, out.APIVersion = info.Verb, info.APIPrefix, info.APIGroup, info.APIVersion
		out.Namespace, out.Resource, out.Subresource, out.Name = info.Namespace, info.Resource, info.Subresource, info.Name
		out.IsResourceRequest, out.InfoPath = info.IsResourceRequest, info.Path
	}
	out.Query, err = url.ParseQuery(u.RawQuery)
	if err != nil {
		out.QueryError = err.Error()
	}
	opts := metainternalversion.ListOptions{}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(u.Query(), metav1.SchemeGroupVersion, &opts); err != nil {
		out.ListOptionsError = err.Error()
	} else {
		if opts.LabelSelector != nil {
			out.LabelSelector = opts.LabelSelector.String()
		}
		if opts.FieldSelector != nil {
			out.FieldSelector = opts.FieldSelector.String()
		}
		out.Watch = opts.Watch
	}
	return out
}

func versions() string {
	parts := []string{runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "k8s.io/apiserver" || d.Path == "k8s.io/apimachinery" {
				v := d.Version
				if d.Replace != nil {
					v = d.Replace.Version
				}
				parts = append(parts, d.Path+"@"+v)
			}
		}
	}
	return strings.Join(parts, " ")
}

func main() {
	version := flag.Bool("version", false, "print the versions of Go and the peer modules")
	flag.Parse()
	if *version {
		fmt.Println(versions())
		return
	}
	// NewRequestInfo logs every list-options decoding error; the reading carries it instead.
	klog.SetLogger(logr.Discard())
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "k8s-requestinfo:", err)
		os.Exit(1)
	}
}

func run() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	line := 0
	for in.Scan() {
		line++
		var req input
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := enc.Encode(read(req)); err != nil {
			return err
		}
	}
	if err := in.Err(); err != nil {
		return err
	}
	return out.Flush()
}
