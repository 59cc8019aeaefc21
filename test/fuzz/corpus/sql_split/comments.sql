-- only a comment; here
;;
  
