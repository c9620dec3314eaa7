{{/* Names and labels shared by every object of the chart. */}}

{{- define "mcsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mcsync.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mcsync.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The ServiceAccount each part runs as: its own in the two-pod layout, the member's in the
single-process one, which is bound to both parts' roles (the union of their grants) and fenced
like the subscriber. */}}
{{- define "mcsync.publisherAccount" -}}
{{ include "mcsync.fullname" . }}-{{ ternary "member" "publisher" .Values.singleProcess.enabled }}
{{- end -}}

{{- define "mcsync.subscriberAccount" -}}
{{ include "mcsync.fullname" . }}-{{ ternary "member" "subscriber" .Values.singleProcess.enabled }}
{{- end -}}

{{/* The processes the chart runs: publisher and subscriber, or the member that is both. */}}
{{- define "mcsync.components" -}}
{{- if .Values.singleProcess.enabled -}}
member
{{- else -}}
{{- if .Values.publisher.enabled }}publisher {{ end -}}
{{- if .Values.subscriber.enabled }}subscriber{{ end -}}
{{- end -}}
{{- end -}}

{{/* The publisher's own arguments. */}}
{{- define "mcsync.publisherArgs" -}}
- --heartbeat-interval={{ .Values.publisher.heartbeatInterval }}
{{- with .Values.publisher.apiServerUrl }}
- --api-server-url={{ . }}
{{- end }}
{{- with .Values.publisher.apiServerCaFile }}
- --api-server-ca-file={{ . }}
{{- end }}
{{- end -}}

{{/* The subscriber's own arguments. */}}
{{- define "mcsync.subscriberArgs" -}}
- --inventory-namespace={{ .Values.subscriber.inventoryNamespace }}
- --lease-namespace={{ .Values.subscriber.leaseNamespace }}
- --staleness-lease={{ .Values.subscriber.stalenessLease }}
- --staleness-policy={{ .Values.subscriber.stalenessPolicy }}
- --quiet-seconds={{ .Values.subscriber.quietSeconds }}
- --burst-quiet-seconds={{ .Values.subscriber.burstQuietSeconds }}
- --max-delay-seconds={{ .Values.subscriber.maxDelaySeconds }}
{{- if .Values.subscriber.stateDir.enabled }}
- --state-dir=/var/lib/mcsync
{{- end }}
{{- end -}}

{{/* The subscriber's state volume (subscriber.stateDir), for its pod (or the member's). */}}
{{- define "mcsync.stateMount" -}}
{{- if .Values.subscriber.stateDir.enabled }}
- name: state
  mountPath: /var/lib/mcsync
{{- end }}
{{- end -}}

{{- define "mcsync.stateVolume" -}}
{{- with .Values.subscriber.stateDir }}
{{- if .enabled }}
- name: state
{{- if .volume }}
  {{- toYaml .volume | nindent 2 }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mcsync.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* How a process reaches NATS: the login and, with nats.tls, the TLS files. */}}
{{- define "mcsync.natsArgs" -}}
- --log-layout={{ .Values.nats.logLayout }}
{{- if .Values.nats.credsKey }}
- --nats-creds=/etc/mcsync/nats/{{ .Values.nats.credsKey }}
{{- else }}
- --nats-user={{ .Values.nats.user | default .Values.clusterId | required "set nats.user or clusterId" }}
- --nats-password-file=/etc/mcsync/nats/{{ .Values.nats.passwordKey }}
{{- end }}
{{- with .Values.nats.tls }}
{{- if .secretName }}
- --nats-ca-file=/etc/mcsync/nats-tls/{{ .caKey }}
{{- if .clientCertKey }}
- --nats-cert-file=/etc/mcsync/nats-tls/{{ .clientCertKey }}
- --nats-key-file=/etc/mcsync/nats-tls/{{ .clientKeyKey | required "set nats.tls.clientKeyKey with nats.tls.clientCertKey" }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Arguments every process takes: NATS login, stream provisioning, health, logs. */}}
{{- define "mcsync.commonArgs" -}}
{{ include "mcsync.natsArgs" . }}
{{- if .Values.createStream }}
- --create-stream
{{- else }}
- --no-create-stream
{{- end }}
- --health-port={{ .Values.healthPort }}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- end -}}

{{/* Settings from values: none of them is a secret. */}}
{{- define "mcsync.env" -}}
- name: MCSYNC_CLUSTERSET
  value: {{ .Values.clusterset | required "set clusterset" | quote }}
- name: MCSYNC_NATS_URL
  value: {{ .Values.nats.url | quote }}
{{- end -}}

{{- define "mcsync.probes" -}}
ports:
  - name: health
    containerPort: {{ .Values.healthPort }}
    protocol: TCP
startupProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: health
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* The NATS password (or credentials file) is mounted from the Secret, never put in env. */}}
{{- define "mcsync.volumeMounts" -}}
- name: nats-credentials
  mountPath: /etc/mcsync/nats
  readOnly: true
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  mountPath: /etc/mcsync/nats-tls
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "mcsync.volumes" -}}
{{- $key := .Values.nats.credsKey | default .Values.nats.passwordKey -}}
- name: nats-credentials
  secret:
    secretName: {{ .Values.nats.existingSecret | required "set nats.existingSecret" }}
    defaultMode: 0440
    items:
      - key: {{ $key }}
        path: {{ $key }}
{{- with .Values.nats.tls }}
{{- if .secretName }}
- name: nats-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end -}}

{{- define "mcsync.podExtras" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
