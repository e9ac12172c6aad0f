# Plot of bench/run.sh's results (data written by bench/report.py).
#   gnuplot -e "datadir='build/bench'; outfile='docs/bench.png'" bench/plot.gp
if (!exists("datadir")) datadir = "build/bench"
if (!exists("outfile")) outfile = "docs/bench.png"
set terminal pngcairo size 1200,900 font ",10"
set output outfile
set multiplot layout 2,2 title "socks5d side by side on loopback (2 CPUs; median of the runs)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key top right
set yrange [0:*]

set title "Throughput, GB/s (1 GiB file)"
plot datadir."/plot-bulk.dat" using 2:xtic(1) title "1 stream", \
     "" using 3 title "32 streams"

set title "Connection rate, conn/s (64 clients, 100-byte response)"
plot datadir."/plot-rate.dat" using 2:xtic(1) title "no auth", \
     "" using 3 title "RFC 1929 auth"

unset style
set style data linespoints
set xrange [0.5:4.5]
set xtics (1, 2, 4)
set xlabel "socks5d workers (-w)"
set title "socks5d worker scaling: throughput (32 streams)"
set ylabel "GB/s"
unset key
plot datadir."/plot-workers.dat" using 1:2 with linespoints lw 2 pt 7 title "GB/s"

set title "socks5d worker scaling: connection rate (64 clients)"
set ylabel "conn/s"
plot datadir."/plot-workers.dat" using 1:3 with linespoints lw 2 pt 7 title "conn/s"
unset multiplot
