/* The first process of every Pod sandbox on `cargo xtask up --node`: it holds the Pod's namespaces open,
 * reaps the children that are re-parented to it, and exits cleanly on SIGINT or SIGTERM.
 * Built with `gcc -Os -static` and packed into the image containerd uses as its sandbox image. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) {
  (void)signo;
  _exit(0);
}

static void reap(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  struct sigaction action;

  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("ksiam-pause 3.10");
    return 0;
  }
  if (getpid() != 1) {
    fputs("pause: warning: not the first process of its PID namespace\n", stderr);
  }

  memset(&action, 0, sizeof(action));
  action.sa_handler = stop;
  if (sigaction(SIGINT, &action, NULL) < 0 || sigaction(SIGTERM, &action, NULL) < 0) {
    return 1;
  }
  action.sa_handler = reap;
  action.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &action, NULL) < 0) {
    return 2;
  }
  for (;;) {
    pause();
  }
}
