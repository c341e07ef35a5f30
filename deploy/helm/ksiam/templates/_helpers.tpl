{{/* The base name of every object (ksiam unless nameOverride is set). */}}
{{- define "ksiam.name" -}}
{{- default "ksiam" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ksiam.labels" -}}
app.kubernetes.io/name: {{ include "ksiam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one Deployment: `component` is all, controller, gateway or webhook. */}}
{{- define "ksiam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ksiam.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ksiam.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ksiam.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ksiam.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ksiam.jwtSecretName" -}}
{{- printf "%s-jwt" (include "ksiam.name" .) -}}
{{- end -}}

{{- define "ksiam.webhookSecretName" -}}
{{- if eq .Values.webhook.certs.mode "secret" -}}
{{- required "webhook.certs.existingSecret is required with webhook.certs.mode=secret" .Values.webhook.certs.existingSecret -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "ksiam.name" .) -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security profile, for every container. */}}
{{- define "ksiam.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment shared by the controller and the gateway (both verify or issue tokens). */}}
{{- define "ksiam.tokenEnv" -}}
- name: KSIAM_JWT_SECRET_FILE
  value: /etc/ksiam/jwt/jwtSecret
- name: KSIAM_ISSUER
  value: {{ .Values.issuer | quote }}
- name: KSIAM_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* One container per part; `part` is controller, gateway or webhook. */}}
{{- define "ksiam.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: {{ .part }}
  image: {{ include "ksiam.image" $root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: [{{ .part }}]
  {{- if eq .part "controller" }}
  env:
    {{- include "ksiam.tokenEnv" $root | nindent 4 }}
    - name: KSIAM_LEASE_NAMESPACE
      value: {{ $root.Release.Namespace }}
    - name: KSIAM_LEASE_NAME
      value: {{ $v.leaderElection.leaseName | quote }}
    - name: KSIAM_LEASE_DURATION_SECONDS
      value: {{ $v.leaderElection.leaseDurationSeconds | quote }}
    - name: KSIAM_LEASE_IDENTITY
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: KSIAM_ADMIN_LISTEN
      value: "0.0.0.0:{{ $v.controller.adminPort }}"
  ports:
    - {name: admin, containerPort: {{ $v.controller.adminPort }}}
  readinessProbe:
    httpGet: {path: /readyz, port: admin}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /livez, port: admin}
    periodSeconds: 10
    failureThreshold: 6
  resources: {{- toYaml $v.controller.resources | nindent 4 }}
  volumeMounts:
    - {name: jwt, mountPath: /etc/ksiam/jwt, readOnly: true}
  {{- else if eq .part "gateway" }}
  env:
    {{- include "ksiam.tokenEnv" $root | nindent 4 }}
    - name: KSIAM_GATEWAY_LISTEN
      value: "0.0.0.0:{{ $v.gateway.port }}"
    - name: KSIAM_HOST_CLUSTER
      value: {{ $v.gateway.hostCluster | quote }}
    - name: KSIAM_AUTHORIZATION_MODE
      value: {{ $v.gateway.authorizationMode | quote }}
    - name: KSIAM_ADMIN_LISTEN
      value: "0.0.0.0:{{ $v.gateway.adminPort }}"
  ports:
    - {name: http, containerPort: {{ $v.gateway.port }}}
    - {name: gateway-admin, containerPort: {{ $v.gateway.adminPort }}}
  readinessProbe:
    httpGet: {path: /readyz, port: gateway-admin}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /livez, port: gateway-admin}
    periodSeconds: 10
    failureThreshold: 6
  resources: {{- toYaml $v.gateway.resources | nindent 4 }}
  volumeMounts:
    - {name: jwt, mountPath: /etc/ksiam/jwt, readOnly: true}
  {{- else if eq .part "webhook" }}
  env:
    - name: KSIAM_WEBHOOK_LISTEN
      value: "0.0.0.0:{{ $v.webhook.port }}"
    - name: KSIAM_WEBHOOK_SERVICE
      value: "{{ $root.Release.Namespace }}/{{ $v.webhook.service.name }}"
    - name: KSIAM_WEBHOOK_TLS_CERT_FILE
      value: /etc/ksiam/webhook/tls.crt
    - name: KSIAM_WEBHOOK_TLS_KEY_FILE
      value: /etc/ksiam/webhook/tls.key
    - name: KSIAM_WEBHOOK_FAILURE_POLICY
      value: {{ $v.webhook.failurePolicy | quote }}
    # The chart owns the MutatingWebhookConfiguration.
    - name: KSIAM_WEBHOOK_NO_REGISTER
      value: "true"
    {{- if $v.webhook.tlsMode }}
    - name: KSIAM_WEBHOOK_TLS_MODE
      value: "true"
    {{- end }}
    - name: KSIAM_LOG_FORMAT
      value: {{ $v.logFormat | quote }}
    - name: KSIAM_ADMIN_LISTEN
      value: "0.0.0.0:{{ $v.webhook.adminPort }}"
  ports:
    - {name: webhook, containerPort: {{ $v.webhook.port }}}
    - {name: webhook-admin, containerPort: {{ $v.webhook.adminPort }}}
  readinessProbe:
    httpGet: {path: /readyz, port: webhook-admin}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /livez, port: webhook-admin}
    periodSeconds: 10
    failureThreshold: 6
  resources: {{- toYaml $v.webhook.resources | nindent 4 }}
  volumeMounts:
    - {name: webhook-tls, mountPath: /etc/ksiam/webhook, readOnly: true}
  {{- end }}
  securityContext: {{- include "ksiam.containerSecurityContext" $root | nindent 4 }}
{{- end -}}

{{/*
The webhook's serving certificate as base64 strings {crt, key, ca}, computed once per render (cached in
.Values) so the Secret and the caBundle agree:
- generate: read back from the existing Secret (upgrades keep it), else a new CA and certificate;
- secret: only the CA, from webhook.certs.caBundle or the existing Secret's ca.crt.
*/}}
{{- define "ksiam.webhookCerts" -}}
{{- if not (hasKey .Values "ksiamWebhookCertsCache") -}}
{{- $name := include "ksiam.webhookSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $certs := dict "crt" "" "key" "" "ca" "" -}}
{{- if and $existing $existing.data (hasKey $existing.data "tls.crt") (hasKey $existing.data "ca.crt") -}}
{{- $certs = dict "crt" (index $existing.data "tls.crt") "key" (index $existing.data "tls.key") "ca" (index $existing.data "ca.crt") -}}
{{- end -}}
{{- if eq .Values.webhook.certs.mode "secret" -}}
{{- with .Values.webhook.certs.caBundle -}}
{{- $_ := set $certs "ca" . -}}
{{- end -}}
{{- else if and (eq .Values.webhook.certs.mode "generate") (not $certs.crt) -}}
{{- $svc := .Values.webhook.service.name -}}
{{- $ns := .Release.Namespace -}}
{{- $days := int .Values.webhook.certs.validityDays -}}
{{- $ca := genCA "ksiam-webhook-ca" $days -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names $days $ca -}}
{{- $certs = dict "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "ca" ($ca.Cert | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "ksiamWebhookCertsCache" $certs -}}
{{- end -}}
{{- toYaml .Values.ksiamWebhookCertsCache -}}
{{- end -}}

{{/* The JWT secret: the value, else the existing Secret's (kept across upgrades), else a new random one. */}}
{{- define "ksiam.jwtSecret" -}}
{{- if not (hasKey .Values "ksiamJwtCache") -}}
{{- $secret := .Values.jwtSecret -}}
{{- if not $secret -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ksiam.jwtSecretName" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "jwtSecret") -}}
{{- $secret = index $existing.data "jwtSecret" | b64dec -}}
{{- else -}}
{{- $secret = randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "ksiamJwtCache" $secret -}}
{{- end -}}
{{- .Values.ksiamJwtCache -}}
{{- end -}}
