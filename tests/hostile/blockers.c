/* Park N threads of one process in a blocking receive on one mqfs queue, then wait to be
 * killed. Usage: blockers QUEUE_FILE N. Prints "started K" once K threads were created.
 * The threads share one descriptor and use the RECEIVE ioctl, as the LD_PRELOAD shim's
 * mq_receive does (read() on one shared descriptor would queue the threads in the kernel,
 * on the file position lock, before they reach the daemon). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "mqfs.h"

#define SMALL_XFER (MQFS_XFER_HEADER_SIZE + 64)

static int fd;

static void *receiver(void *unused)
{
    unsigned char request[SMALL_XFER];
    struct mqfs_xfer *xfer = (struct mqfs_xfer *)request;
    (void)unused;
    memset(request, 0, sizeof request);
    xfer->msg_len = 1 << 24; /* our buffer size: at least any msgsize */
    ioctl(fd, MQFS_IOC_SIZED(MQFS_IOC_RECEIVE, SMALL_XFER), request);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    long wanted = atol(argv[2]), started = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (; started < wanted; started++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, receiver, NULL) != 0)
            break;
    }
    printf("started %ld\n", started);
    fflush(stdout);
    for (;;)
        pause();
}
