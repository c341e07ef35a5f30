// Command controller-runtime-webhook is the Go peer of ksiam's pod injector webhook: a
// sigs.k8s.io/controller-runtime admission.Handler doing the mutation of KubeSphere's
// serviceaccount-pod-injector (spec kubesphere-iam.md §7), served by controller-runtime's webhook server over
// TLS, with the ServiceAccounts and Secrets held in memory (as ksiam's benchmark uses MemoryLookup).
//
//	controller-runtime-webhook -addr 127.0.0.1:0     # prints "LISTENING <host:port>" once it serves
//	controller-runtime-webhook -version              # versions of Go and of the peer modules
//
// The handler follows what KubeSphere's injector does: decode a typed corev1.Pod, read the
// kubesphere.io/serviceaccount-name annotation, get the ServiceAccount, check its first secret exists, add the
// projected volume and the read-only mounts, marshal the pod and answer admission.PatchResponseFromRaw.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const (
	annotation  = "kubesphere.io/serviceaccount-name"
	volumeName  = "kubesphere-service-account"
	mountPath   = "/var/run/secrets/kubesphere.io/serviceaccount"
	tokenKey    = "token"
	webhookPath = "/serviceaccount-pod-injector"
)

// serviceAccount is the part of a kubesphere.io/v1alpha1 ServiceAccount the injector reads.
type serviceAccount struct {
	Secrets []corev1.ObjectReference `json:"secrets"`
}

// memory is the in-memory lookup: ServiceAccounts and existing Secrets by namespace/name.
type memory struct {
	serviceAccounts map[string]serviceAccount
	secrets         map[string]bool
}

// injector is the admission.Handler.
type injector struct {
	decoder admission.Decoder
	lookup  *memory
}

var podResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

func (h *injector) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != "CREATE" || req.Resource != metav1GVR(podResource) || req.SubResource != "" {
		return admission.Allowed("")
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	name := pod.Annotations[annotation]
	if name == "" {
		return admission.Allowed("")
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	sa, ok := h.lookup.serviceAccounts[namespace+"/"+name]
	if !ok {
		return admission.Errored(http.StatusNotFound, fmt.Errorf("ServiceAccount.kubesphere.io %q not found", name))
	}
	if len(sa.Secrets) == 0 {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("can not find any token in service account: %s", name))
	}
	secret := sa.Secrets[0].Name
	secretNamespace := sa.Secrets[0].Namespace
	if secretNamespace == "" {
		secretNamespace = namespace
	}
	if !h.lookup.secrets[secretNamespace+"/"+secret] {
		return admission.Errored(http.StatusNotFound, fmt.Errorf("Secret %q not found", secret))
	}
	inject(pod, secret)
	marshaled, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, marshaled)
}

// inject adds the projected token volume (replacing one of the same name) and the read-only mount to every
// container and init container.
func inject(pod *corev1.Pod, secret string) {
	mode := int32(420)
	volume := corev1.Volume{
		Name: volumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: &mode,
			Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret},
				Items:                []corev1.KeyToPath{{Key: tokenKey, Path: tokenKey}},
			}}},
		}},
	}
	replaced := false
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == volumeName {
			pod.Spec.Volumes[i], replaced = volume, true
		}
	}
	if !replaced {
		pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
	}
	mount := corev1.VolumeMount{Name: volumeName, MountPath: mountPath, ReadOnly: true}
	addMount := func(cs []corev1.Container) {
		for i := range cs {
			found := false
			for j := range cs[i].VolumeMounts {
				if cs[i].VolumeMounts[j].Name == volumeName {
					cs[i].VolumeMounts[j], found = mount, true
				}
			}
			if !found {
				cs[i].VolumeMounts = append(cs[i].VolumeMounts, mount)
			}
		}
	}
	addMount(pod.Spec.Containers)
	addMount(pod.Spec.InitContainers)
}

// selfSigned writes tls.crt and tls.key (ECDSA P-256, like ksiam's loopback certificate) for 127.0.0.1 and
// localhost into dir.
func selfSigned(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "controller-runtime-webhook"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func versions() string {
	parts := []string{runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "sigs.k8s.io/controller-runtime" || d.Path == "k8s.io/api" {
				parts = append(parts, d.Path+"@"+d.Version)
			}
		}
	}
	return strings.Join(parts, " ")
}

// freePort picks a free port on host (controller-runtime's server takes a port number, not a listener).
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (port 0: a free port)")
	version := flag.Bool("version", false, "print the versions of Go and the peer modules")
	flag.Parse()
	if *version {
		fmt.Println(versions())
		return
	}
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "controller-runtime-webhook:", err)
		os.Exit(1)
	}
}

func newInjector() *injector {
	return &injector{
		decoder: admission.NewDecoder(scheme()),
		lookup: &memory{
			serviceAccounts: map[string]serviceAccount{
				"default/sample": {Secrets: []corev1.ObjectReference{{Name: "sample-lqmbj", Namespace: "default"}}},
			},
			secrets: map[string]bool{"default/sample-lqmbj": true},
		},
	}
}

func run(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	if p == 0 {
		if p, err = freePort(host); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "cr-webhook-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := selfSigned(dir); err != nil {
		return err
	}
	server := webhook.NewServer(webhook.Options{Host: host, Port: p, CertDir: dir})
	server.Register(webhookPath, &webhook.Admission{Handler: newInjector()})
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- server.Start(ctx) }()
	// Ready once the TLS port accepts connections.
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case err := <-errs:
			return err
		default:
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhook server did not start listening")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("LISTENING %s\n", net.JoinHostPort(host, strconv.Itoa(p)))
	return <-errs
}
