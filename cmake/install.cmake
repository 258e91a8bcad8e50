# Install rules (included by the top-level CMakeLists.txt):
#   include/streamdiff.h, lib/libstreamdiff.so.<VERSION> (+ SONAME link libstreamdiff.so.<SOVERSION>
#   and the dev link libstreamdiff.so), lib/libstreamdiff.a, lib/pkgconfig/streamdiff.pc and
#   bin/streamdiff. Only the public header is installed; streamdiff_internal, streamdiff_check and
#   sd_server are build-tree libraries. `cmake --install BUILD --prefix P` may pick any prefix:
#   streamdiff.pc locates itself (${pcfiledir}), so the package can be moved.
install(FILES ${CMAKE_SOURCE_DIR}/include/streamdiff.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS streamdiff_shared streamdiff_static
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS streamdiff RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# streamdiff.pc: `pkg-config --cflags --libs streamdiff` links the shared library;
# `pkg-config --static --libs streamdiff` adds what the static one needs.
set(SD_PC_REQUIRES_PRIVATE "libcjson libutf8proc libpng libjpeg openblas")
if(FFMPEG_FOUND)
  string(APPEND SD_PC_REQUIRES_PRIVATE " libavformat libavcodec libswscale libavutil")
endif()
if(AVDEVICE_FOUND)
  string(APPEND SD_PC_REQUIRES_PRIVATE " libavdevice")
endif()
set(SD_PC_LIBS_PRIVATE "${OpenMP_C_FLAGS} -lm -lpthread")
if(TARGET CUDA::cudart AND SD_CUDA_SOURCES)
  string(APPEND SD_PC_LIBS_PRIVATE " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart -lstdc++")
endif()
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(SD_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(SD_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(SD_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # the .pc lives in <prefix>/<libdir>/pkgconfig: the prefix is that many levels up
  file(RELATIVE_PATH SD_PC_UP "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" SD_PC_UP "${SD_PC_UP}")
  set(SD_PC_PREFIX "\${pcfiledir}/${SD_PC_UP}")
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/streamdiff.pc.in ${CMAKE_BINARY_DIR}/streamdiff.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/streamdiff.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
