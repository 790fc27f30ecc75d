import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * Runs mongo-java-server's in-memory backend for the test suite (see tests/servers.py).
 *
 * Usage: MongoJavaServerLauncher HOST PORT VERSION WIRE_VERSION, for example
 * "127.0.0.1 27017 4.4.0 9". The server's own choices of version (at most 5.0,
 * announced with wire version 8) are older than current pymongo accepts, so
 * the version and wire version to announce in hello/isMaster and buildInfo
 * are given here. Runs until it is terminated.
 */
public final class MongoJavaServerLauncher {

    private MongoJavaServerLauncher() {
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 4) {
            System.err.println("usage: MongoJavaServerLauncher HOST PORT VERSION WIRE_VERSION");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        List<Integer> versionArray = new ArrayList<>();
        for (String part : args[2].split("\\.")) {
            versionArray.add(Integer.valueOf(part));
        }
        int wireVersion = Integer.parseInt(args[3]);
        MongoVersion version = new MongoVersion() {
            @Override
            public List<Integer> getVersionArray() {
                return versionArray;
            }

            @Override
            public int getWireVersion() {
                return wireVersion;
            }
        };
        MongoServer server = new MongoServer(new MemoryBackend().version(version));
        server.bind(host, port);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdownNow();
            stopped.countDown();
        }));
        System.out.println("listening on " + host + ":" + port);
        System.out.flush();
        stopped.await();
    }
}
