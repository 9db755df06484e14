# Hotswap on Nomad (docker driver, image hotswap:latest from deploy/Dockerfile).
#
# The module comes from the Nomad Variable nomad/jobs/hotswap, item module_b64 (the .wasm file,
# base64-encoded). Changing the variable re-renders the template, and its change_script runs
# `hotswap reload` with the gate below: the task keeps running, and keeps its state, through a
# new version. Put a module there before the first run:
#   nomad var put -force nomad/jobs/hotswap module_b64="$(base64 -w0 app.wasm)"
# The state lives on the host volume hotswap-state (declare it in the client's configuration,
# owned by uid 10001, the image's user). See docs/deploy.md.

variable "image" {
  type    = string
  default = "hotswap:latest"
}

variable "reload_args" {
  type        = list(string)
  description = "What a new version must get through (the `hotswap reload` flags)."
  default     = ["--trial", "100", "--canary", "60s", "--max-errors", "0"]
}

job "hotswap" {
  type = "service"

  group "hotswap" {
    # Each allocation keeps its own state on its own node's volume.
    count = 1

    volume "state" {
      type      = "host"
      source    = "hotswap-state"
      read_only = false
    }

    network {
      port "http" {
        to = 8080
      }
      port "metrics" {
        to = 9464
      }
    }

    task "hotswap" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http", "metrics"]
        # No --watch: a new version arrives through the template's change_script below.
        args = [
          "run", "/local/module/app.wasm",
          "--state-dir", "/var/lib/hotswap", "--durable",
          "--snapshot-every", "5m",
          "--http", "0.0.0.0:8080",
          "--metrics", "0.0.0.0:9464",
          "--control", "/local/control.sock",
          "--max-memory", "256",
        ]
      }

      volume_mount {
        volume      = "state"
        destination = "/var/lib/hotswap"
      }

      # The module. Rendered before the task starts, and again whenever the variable changes;
      # then the change_script swaps it in. A refused or rolled-back version leaves the old one
      # running (the script fails, and the task is not killed: fail_on_error = false), but the
      # file now holds the refused version: put the previous module back in the variable, or a
      # restart of the task would start from it.
      template {
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/hotswap" -}}{{ .module_b64.Value | base64Decode }}{{- end -}}
        EOT
        destination = "local/module/app.wasm"
        perms       = "0644"
        change_mode = "script"
        change_script {
          command = "/usr/local/bin/hotswap"
          args = concat(
            ["reload", "/local/module/app.wasm", "--control", "/local/control.sock"],
            var.reload_args,
          )
          # The reload waits for the trial, the swap and the whole canary window.
          timeout       = "5m"
          fail_on_error = false
        }
      }

      # Alternatively, fetch the module with an artifact (and drop the template): a new URL is
      # then a new job version, which restarts the task; the state is kept (--state-dir), and
      # the host swaps the restored state into the new module at start.
      # artifact {
      #   source      = "https://example.com/app.wasm"
      #   destination = "local/module/app.wasm"
      #   mode        = "file"
      #   options {
      #     checksum = "sha256:..."
      #   }
      # }

      service {
        name     = "hotswap"
        port     = "http"
        provider = "consul"

        # Script checks need the Consul provider (Nomad's own service discovery runs only HTTP
        # and TCP checks).
        check {
          name     = "hotswap status"
          type     = "script"
          command  = "/usr/local/bin/hotswap"
          args     = ["status", "--json", "--control", "/local/control.sock"]
          interval = "10s"
          timeout  = "5s"
        }
      }

      service {
        name     = "hotswap-metrics"
        port     = "metrics"
        provider = "consul"
        tags     = ["prometheus"]
        meta {
          metrics_path = "/metrics"
        }
      }

      # SIGTERM stops the host gracefully: drains HTTP (at most 10 s), answers the events in
      # flight, takes a last snapshot.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      resources {
        cpu    = 200
        memory = 1024
      }
    }
  }
}
